"""The dispatch plane: from queued jobs in the ledger to a backend, within its capacity."""
