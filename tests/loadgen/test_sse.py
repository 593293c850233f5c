from kvbench.loadgen.sse import SSEParser

STREAM = (
    b": keep-alive\r\n\r\n"
    b'data: {"a": 1}\r\n\r\n'
    b'event: message\ndata: {"b":\ndata: 2}\nid: 7\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [b'{"a": 1}', b'{"b":\n2}', b"[DONE]"]


def test_every_split_point_gives_the_same_events():
    for cut in range(len(STREAM) + 1):
        parser = SSEParser()
        events = parser.feed(STREAM[:cut]) + parser.feed(STREAM[cut:])
        assert events == EXPECTED, cut
        assert not parser.pending()


def test_byte_by_byte_feed():
    parser = SSEParser()
    events = [e for i in range(len(STREAM)) for e in parser.feed(STREAM[i : i + 1])]
    assert events == EXPECTED


def test_many_events_in_one_read_and_bare_cr_line_endings():
    parser = SSEParser()
    assert parser.feed(b"data: x\r\rdata: y\r\r:c\r\rdata:z\r") == [b"x", b"y"]
    assert parser.feed(b"\r") == []  # a trailing CR may be half of CRLF: wait for the next byte
    assert parser.feed(b"\n") == [b"z"]


def test_truncated_event_is_pending():
    parser = SSEParser()
    assert parser.feed(b'data: {"a"') == []
    assert parser.pending()
    parser = SSEParser()
    assert parser.feed(b"data: complete-line-but-no-blank\n") == []
    assert parser.pending()


def test_comment_only_stream_has_no_events_and_nothing_pending():
    parser = SSEParser()
    assert parser.feed(b": ping\n\n: ping\n\n") == []
    assert not parser.pending()
