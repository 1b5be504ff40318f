"""CAP 1.2 alerts, subscriptions and fan-out."""
