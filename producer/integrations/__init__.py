"""Integrations: one-line setup for the stacks agents are built on.

Each module adapts one framework's callbacks to the producer API and imports only
``agentspool.producer`` and its framework, which is an optional extra
(``pip install agentspool[<extra>]``). Importing ``agentspool`` never imports them.
"""
