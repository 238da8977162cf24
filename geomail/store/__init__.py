"""Mailbox storage: the only package that knows the on-disk layout of mailboxes."""
