"""The deletion service: forget requests (validation, ids, keys), the method run, the deletion
ledger, and the files every request writes."""

from miniunlearn.service.forget import LedgerWarning, forget
from miniunlearn.service.ledger import LEDGER_FILE, Ledger

__all__ = ["LEDGER_FILE", "Ledger", "LedgerWarning", "forget"]
