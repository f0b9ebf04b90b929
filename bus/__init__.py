"""Kafka plumbing shared by every stage: following a topic, producing with acks,
the schema registry's lookups.

The ground floor next to `schemas`: it imports nothing of ours.
"""
