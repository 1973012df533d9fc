"""Cloud SDKs in one place: how Conveyor builds their clients and reads their errors."""
