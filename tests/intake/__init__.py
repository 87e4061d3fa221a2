"""Tests of the intake stage."""
