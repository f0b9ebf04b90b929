"""The integrations stage (seed 001, "Ingesting via integrations"): the connections Sluice
keeps on its users' behalf, each landing its messages on the raw topic as raw envelopes
of route `integration`, which the processors map like any template request.

Read top to bottom:
- `envelope`: an integration's message as a raw envelope;
- `durable`: the producer that says when an envelope is durable (acks=all);
- `assignment`: which integrations this instance runs (the integrations topic's partitions
  its consumer group gives it), and the state (cursors) stored there;
- `mqtt`: a subscription, acknowledged to the broker only once durable;
- `poll`: an HTTP feed pulled with a cursor, advanced only once the page is durable;
- `stage`: runs what this instance owns, reconciled with the catalog, and reports status;
- `service`: the process (`sluice integrations`), with its health and heartbeat.
"""
