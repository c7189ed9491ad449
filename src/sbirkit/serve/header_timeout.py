"""A deadline for request headers: uvicorn's HTTP protocol, closing a connection whose request
headers are not complete within :data:`HEADER_TIMEOUT_S` seconds.

uvicorn (0.55) arms its keep-alive timer only after a response and cancels it at the first byte
of the next request, so a client that connects and sends nothing, or sends its headers a byte
at a time, holds a connection (and a file descriptor) forever. Passing this class as uvicorn's
``http`` protocol adds the deadline: armed when the connection opens and again after each
response, it closes the connection unless a new request's headers have arrived by then (the
request body and the response are not limited by it; the body has ``--max-body-bytes``).
"""

from __future__ import annotations

from uvicorn.protocols.http.auto import AutoHTTPProtocol

#: seconds a client has to send a request's headers (after connecting, or after a response)
HEADER_TIMEOUT_S = 10.0


class HeaderTimeoutHTTPProtocol(AutoHTTPProtocol):
    """uvicorn's HTTP protocol (httptools' when installed, else h11's) with the header deadline."""

    header_timeout = HEADER_TIMEOUT_S

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_deadline()

    def connection_lost(self, exc) -> None:
        self._cancel_header_deadline()
        super().connection_lost(exc)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        if self.transport.is_closing():
            return
        self._header_cycle = getattr(self, "cycle", None)  # the request before the deadline
        self._header_deadline = self.loop.call_later(float(self.header_timeout), self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        # uvicorn makes a cycle per request once its headers are in: a new cycle, or one still
        # running (a pipelined request started by the last response), means they arrived in time
        cycle = getattr(self, "cycle", None)
        waiting = cycle is self._header_cycle and (cycle is None or cycle.response_complete)
        if waiting and not self.transport.is_closing():
            self.transport.close()
