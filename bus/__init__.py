"""Kafka plumbing shared by every stage: following a topic, producing with acks.

The ground floor next to `schemas`: it imports nothing of ours.
"""
