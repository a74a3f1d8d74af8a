"""The one thing every vendor failure tells the delivery worker: may the same send succeed later,
and may the failed attempt have reached the vendor anyway."""

from __future__ import annotations


class DeliveryError(Exception):
    retryable: bool = False
    # True when the request may have been accepted although we saw no answer (a read timeout):
    # the next attempt must not blindly send again.
    uncertain: bool = False
