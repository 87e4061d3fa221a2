"""Tests of the producer stage."""
