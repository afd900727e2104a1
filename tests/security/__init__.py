"""Security tests: each attack written the way an attacker would make it, against real processes."""
