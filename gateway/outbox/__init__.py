"""The mail outbox: mail is written in the transaction of the change that causes it, then
delivered by a sender task with retries and backoff."""
