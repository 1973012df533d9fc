"""The engine's outage: down from the first call that cannot connect until a ping answers."""

from __future__ import annotations

import threading

from requests.exceptions import ConnectionError as RequestsConnectionError

from conveyor.errors import EngineUnreachable
from conveyor.runners.engine_outage import EngineOutage


class FlakyEngine:
    def __init__(self) -> None:
        self.answers = False
        self.tidied = 0

    def ping(self) -> bool:
        if not self.answers:
            raise RequestsConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))")
        return True

    def tidy(self) -> None:
        self.tidied += 1


def test_a_lost_call_marks_the_engine_down_until_a_ping_answers_then_tidies_and_tells() -> None:
    engine = FlakyEngine()
    outage = EngineOutage("unix:///x.sock", engine.ping, engine.tidy, probe_s=0.01)
    heard: list[str] = []
    back = threading.Event()
    outage.watch(down=heard.append, up=lambda reason: (heard.append(reason), back.set()))
    assert outage.problem() is None

    error = outage.lost(RequestsConnectionError("Connection refused"))
    outage.lost(RequestsConnectionError("Connection refused"))  # a second job cut: one outage, one notice

    assert isinstance(error, EngineUnreachable)
    assert "unix:///x.sock does not answer" in str(error)
    assert "jobs wait for it" in (outage.problem() or "")
    assert len(heard) == 1 and "does not answer" in heard[0]
    engine.answers = True
    assert back.wait(5)
    assert outage.problem() is None
    assert engine.tidied == 1
    assert "answers again after" in heard[1]
    outage.close()


def test_the_reason_is_the_innermost_one_on_one_line() -> None:
    outage = EngineOutage("unix:///x.sock", lambda: None, lambda: None, probe_s=60)
    nested = RequestsConnectionError("('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))\nmore")
    outage.lost(nested)
    problem = outage.problem() or ""
    assert "\n" not in problem
    assert "No such file or directory" in problem
    outage.close()
