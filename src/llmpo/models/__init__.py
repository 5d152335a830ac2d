"""Sufficient statistics, leaders and stopping rules of the policy spaces."""
