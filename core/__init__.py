"""Shared vocabulary of Setu: settings, domain types, the directory and the store."""
