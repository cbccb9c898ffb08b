"""A watcher's connection on loan to the sync loop (folder_watch.Loans): the loop borrows it for
one change and gives it back; a loan nobody took is taken back, one in use never is.
(tests/test_daemon.py shows the whole exchange against Dovecot.)"""

from __future__ import annotations

from typing import Any, cast

from smime_companion.folder_watch import Loans
from smime_companion.sync.protocols import Mailbox

BOX = cast(Mailbox, object())


def test_the_loop_borrows_the_connection_of_that_folder_only() -> None:
    loans = Loans()
    loan = loans.offer("work", "INBOX", BOX)
    assert loans.borrow("work", "Sent") is None
    assert loans.borrow("home", "INBOX") is None
    assert loans.borrow("work", "INBOX") is BOX
    assert not loan.returned.is_set()
    loans.give_back("work", "INBOX")
    assert loan.returned.is_set()
    assert loans.borrow("work", "INBOX") is None  # one loan, one change


def test_a_loan_nobody_took_is_taken_back_and_then_cannot_be_borrowed() -> None:
    loans = Loans()
    loan = loans.offer("work", "INBOX", BOX)
    assert loans.withdraw("work", "INBOX", loan)
    assert loans.borrow("work", "INBOX") is None
    loans.give_back("work", "INBOX")  # the loop handling the change later: nothing to return
    assert not loan.returned.is_set()


def test_a_loan_in_use_is_not_taken_back_until_it_is_returned() -> None:
    loans = Loans()
    loan = loans.offer("work", "INBOX", BOX)
    assert loans.borrow("work", "INBOX") is BOX
    assert not loans.withdraw("work", "INBOX", loan)  # the pass still reads from it
    loans.give_back("work", "INBOX")
    assert loans.withdraw("work", "INBOX", loan)  # returned: the watcher may go on


def test_a_newer_loan_of_the_folder_is_left_on_offer_when_an_older_one_is_withdrawn() -> None:
    loans = Loans()
    old: Any = loans.offer("work", "INBOX", BOX)
    other = cast(Mailbox, object())
    loans.offer("work", "INBOX", other)
    assert loans.withdraw("work", "INBOX", old)  # nothing of the old one is lent any more
    assert loans.borrow("work", "INBOX") is other
