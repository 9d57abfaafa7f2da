"""Felix's dataplane: managers that turn messages into desired kernel state, and the apply loop."""
