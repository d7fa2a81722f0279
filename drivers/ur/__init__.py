"""Universal Robots over RTDE (TCP 30004): codec, recipes, client, arm driver and controller simulator."""
