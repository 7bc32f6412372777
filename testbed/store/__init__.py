"""What runs leave behind: run and case folders, their index, a case's event history."""
