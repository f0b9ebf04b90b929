"""One request's ASGI exchange as a middleware sees it pass: its body's bytes and its reply's status."""

from __future__ import annotations

from starlette.types import Message, Receive, Send


class Exchange:
    """Wraps `receive` and `send`: pass `exchange.receive` and `exchange.send` to the inner app."""

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive, self._send = receive, send
        self.body = 0  # bytes of the request body the app read
        self.status = 500  # what the client sees when the app raises before answering

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self.body += len(message.get("body", b""))
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self._send(message)
