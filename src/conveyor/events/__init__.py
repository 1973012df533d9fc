"""The event plane: receivers turn what stores send into ObjectEvents and hand them to the intake."""
