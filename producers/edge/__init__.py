"""The HTTP layer every route shares: the server protocol and its slow-client defences,
listeners and forwarding between workers, body limits and content codings, auth, rate
limits, the error shape and its handlers, request metrics, the fast ingest dispatch,
and the raw producer with the results listener that every ingest goes through (submit).
"""
