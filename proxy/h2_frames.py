"""The data port's HTTP/2 connection, as the `h2` library keeps it, with two changes
proxy/h2_server.py needs (kept apart: both override `h2` internals, and its next
release is checked here first, by tests/proxy/test_h2_server.py):

* `ServerFrameBuffer` refuses an overlong frame at its header and an overlong header
  block as it arrives, not once `h2` has held it whole;
* `ServerConnection` keeps a client's streams open after its GOAWAY (NO_ERROR).
"""

from __future__ import annotations

from typing import Any

import h2.connection
import h2.errors
import h2.exceptions
import h2.frame_buffer
import hyperframe.frame

__all__ = ["ServerConnection", "ServerFrameBuffer"]


class ServerFrameBuffer(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, refusing what it would hold before refusing it:

    * a frame longer than SETTINGS_MAX_FRAME_SIZE, as soon as its 9-byte header is in
      (FRAME_SIZE_ERROR); h2 checks the length once the whole frame has arrived, so a
      header declaring 16 MiB had the connection hold up to 16 MiB first;
    * a header block (HEADERS and its CONTINUATION frames) longer than `max_header_block`
      before it ends (ENHANCE_YOUR_CALM, as the HPACK decoder refuses one too large); h2
      decodes, and so checks, a block only once it ends, and holds up to 64 frames of it
      (1 MiB at 16 KiB a frame) until then. The encoded block is no longer than the header
      list it encodes as SETTINGS_MAX_HEADER_LIST_SIZE counts it (32 bytes a field on top).
    """

    def __init__(self, max_header_block: int) -> None:
        super().__init__(server=True)
        self.max_header_block = max_header_block

    def __next__(self) -> hyperframe.frame.Frame:
        if len(self._data) >= 9:
            self._validate_frame_length(int.from_bytes(self._data[:3], "big"))
        return super().__next__()

    def _update_header_buffer(self, f: hyperframe.frame.Frame | None) -> hyperframe.frame.Frame | None:
        f = super()._update_header_buffer(f)
        if sum(len(frame.data) for frame in self._headers_buffer) > self.max_header_block:
            raise h2.exceptions.DenialOfServiceError(f"a header block over {self.max_header_block} bytes")
        return f


class ServerConnection(h2.connection.H2Connection):
    """h2's connection, but a client's GOAWAY (NO_ERROR) keeps the streams it opened open
    (RFC 9113 §6.8). h2 moves the whole connection to CLOSED on it; the AWS SDK for
    JavaScript sends GOAWAY right after an event stream's response head, and on
    InvokeModelWithBidirectionalStream it keeps sending request DATA on that stream. Undone
    here, while the frame is processed: a DATA frame in the same read as the GOAWAY is
    handled before `H2Protocol` sees the ConnectionTerminated event."""

    def _receive_goaway_frame(self, frame: hyperframe.frame.GoAwayFrame) -> Any:
        result = super()._receive_goaway_frame(frame)
        if frame.error_code == h2.errors.ErrorCodes.NO_ERROR:
            self.state_machine.state = h2.connection.ConnectionState.SERVER_OPEN
        return result
