"""The embedded platform: everything `conveyor up` runs, composed in one place."""
