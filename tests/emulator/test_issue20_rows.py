"""Issue 20's emulator rows: Rapid7-shaped sequence numbers, `kvp_info`, `/management/labels`,
running statistics, the Context endpoint, management data and `topkeys`."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from logsearch_emulator import kvp
from logsearch_emulator.app import EmulatorApp
from logsearch_emulator.options import EmulatorOptions
from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000
WINDOW = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 10 * MINUTE_MS}


def _links(body: dict) -> dict[str, str]:
    return {link["rel"]: link["href"] for link in body.get("links") or []}


# ----------------------------------------------------------------- 1. sequence numbers
def test_default_sequence_numbers_have_rapid7s_shape(emulator_factory):
    """Multiples of 4096 within [2^60, 3 * 2^60), stepping by 4096 inside one millisecond,
    unique per log, never shared by two logs inside one millisecond, ordered, in int64."""
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, burst_probability=1.0)
    path = "/query/logsets/" + emu.logsets[0]["id"]
    window = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 3 * MINUTE_MS, "per_page": 500}
    events = pull(emu.base_url, emu.api_key, path, window).events
    assert len(events) > 1000
    seqs = [e["sequence_number"] for e in events]
    assert all(s == int(e["sequence_number_str"]) for s, e in zip(seqs, events, strict=True))
    assert all(s % 4096 == 0 for s in seqs)
    assert all(2**60 <= s < 3 * 2**60 < 2**63 for s in seqs)
    by_log_ms: dict[tuple[str, int], list[int]] = defaultdict(list)
    for event in events:
        by_log_ms[(event["log_id"], event["timestamp"])].append(event["sequence_number"])
    steps = {b - a for v in by_log_ms.values() for a, b in itertools.pairwise(v)}
    assert steps == {4096}, "4096 apart inside one millisecond"
    assert any(len(v) > 100 for v in by_log_ms.values()), "bursts were checked"
    for log_id in {e["log_id"] for e in events}:
        mine = [e["sequence_number"] for e in events if e["log_id"] == log_id]
        assert len(set(mine)) == len(mine), "unique per log"
    in_ms: dict[int, list[int]] = defaultdict(list)
    for event in events:
        in_ms[event["timestamp"]].append(event["sequence_number"])
    assert all(len(set(v)) == len(v) for v in in_ms.values()), "no number shared inside a ms"
    order = [(e["timestamp"], e["sequence_number"]) for e in events]
    assert order == sorted(order)


def test_rapid7_shape_is_deterministic_and_keeps_the_data():
    """Same seed, same numbers; the shape changes only the numbers, not which entries exist."""
    span = (NOW_MS - HOUR_MS, NOW_MS - HOUR_MS + MINUTE_MS)
    a = EmulatorApp(EmulatorOptions(fixed_now_ms=NOW_MS))
    b = EmulatorApp(EmulatorOptions(fixed_now_ms=NOW_MS))
    odd = EmulatorApp(EmulatorOptions(fixed_now_ms=NOW_MS, sequence_shape="odd"))
    assert a.truth(*span) == b.truth(*span)
    assert [k[:2] for k in a.truth(*span)] == [k[:2] for k in odd.truth(*span)]
    assert {k[2] for k in a.truth(*span)}.isdisjoint({k[2] for k in odd.truth(*span)})
    assert all(int(k[2]) % 2 == 1 for k in odd.truth(*span)), "odd: never a double"
    many = EmulatorApp(EmulatorOptions(log_count=2048, logset_count=3))
    assert len({log.shift for log in many.data.logs}) == 2048, "every log its own shift"


# ----------------------------------------------------------------- 2. kvp_info
def test_kvp_parser_matches_the_spec_example_and_text_pairs():
    assert kvp.pairs('{"931dde6c60":899}') == [("json.931dde6c60", 2, 12, "899", 14, 17)]
    nested = '{"a": {"b": "x y"}, "l": [1, {"z": 2}], "n": null, "f": -1.5e3}'
    assert [p[0] for p in kvp.pairs(nested)] == ["json.a.b", "json.n", "json.f"]
    text = 'fw-1 filterlog[5]: action=allow src=10.0.0.1 rule="inbound 3" x= =y'
    pairs = kvp.pairs(text)
    assert [(p[0], p[3]) for p in pairs] == [
        ("action", "allow"),
        ("src", "10.0.0.1"),
        ("rule", "inbound 3"),
    ]
    for message in (nested, text):
        for key, ks, ke, value, vs, ve in kvp.pairs(message):
            assert message[vs:ve] == value
            assert message[ks:ke] == key.removeprefix("json.").rsplit(".", 1)[-1]
    assert kvp.pairs('{"a":1,,}') == [], "JSON that does not parse and has no key=value"


@pytest.mark.parametrize("shape", ["flat", "nested_value"])
def test_kvp_info_spans_point_into_the_message_and_next_links_keep_it(emulator_factory, shape):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0, kvp_shape=shape)
    path = f"/query/logs/{emu.log_ids[0]}"
    result = pull(emu.base_url, emu.api_key, path, {**WINDOW, "per_page": 200, "kvp_info": "true"})
    assert result.pages > 1
    assert all("kvp_info=true" in href for href in result.next_hrefs)
    plain = pull(emu.base_url, emu.api_key, path, {**WINDOW, "per_page": 200}).events
    assert [e["sequence_number_str"] for e in result.events] == [
        e["sequence_number_str"] for e in plain
    ]
    json_keys = text_keys = 0
    for event, without in zip(result.events, plain, strict=True):
        items = event.pop("kvp_info")
        assert event["links"][0]["href"].endswith("&context_type=SURROUND&kvp_info=true")
        event["links"][0]["href"] = event["links"][0]["href"].removesuffix("&kvp_info=true")
        assert event == without, "kvp_info is the only difference"
        message = event["message"]
        for item in items:
            if shape == "flat":
                assert set(item) == {"key", "value"}
                key, value = item["key"], item["value"]
            else:
                assert set(item) == {"key"}
                key = dict(item["key"])
                value = key.pop("value")
            assert set(key) == set(value) == {"text", "start", "end"}
            assert message[value["start"] : value["end"]] == value["text"]
            if key["text"].startswith("json."):
                json_keys += 1
                assert message[key["start"] : key["end"]] == key["text"].split(".")[-1]
                assert message[key["start"] - 1] == message[key["end"]] == '"'
            else:
                text_keys += 1
                assert message[key["start"] : key["end"]] == key["text"]
                assert message[key["end"]] == "="
    assert json_keys > 1000
    assert text_keys > 0, "key=value text messages give their pairs"


def test_without_kvp_info_the_page_is_byte_identical(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    url = f"{emu.base_url}/query/logs/{emu.log_ids[0]}"
    plain = session.get(url, params=WINDOW).content
    assert b"kvp_info" not in plain
    assert session.get(url, params={**WINDOW, "kvp_info": "false"}).content == plain
    with_kvp = session.get(url, params={**WINDOW, "kvp_info": "true"})
    assert b'"kvp_info":[' in with_kvp.content
    posted = session.post(
        f"{emu.base_url}/query/logs",
        params={"kvp_info": "true"},
        json={"logs": [emu.log_ids[0]], "leql": {"statement": "", "during": WINDOW}},
    )
    assert posted.content == with_kvp.content, "POST takes kvp_info as a URL parameter"


def test_kvp_info_on_labelled_events_keeps_valid_json(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    page = (
        session_for(emu)
        .get(
            f"{emu.base_url}/query/logs/{':'.join(emu.log_ids)}",
            params={**WINDOW, "per_page": 500, "kvp_info": "true"},
        )
        .json()
    )
    labelled = [e for e in page["events"] if e["labels"]]
    assert labelled
    assert all(isinstance(e["kvp_info"], list) for e in page["events"])
    assert all(set(e["labels"][0]) == {"id", "links"} for e in labelled)


# ----------------------------------------------------------------- 3. labels
def test_management_labels_lists_every_label_the_same_as_by_id(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    listing = session.get(f"{emu.base_url}/management/labels")
    assert listing.status_code == 200
    labels = listing.json()["labels"]
    assert all(set(label) == {"id", "sn", "name", "color", "reserved"} for label in labels)
    by_name = {label["name"]: label for label in labels}
    assert by_name["Out of order entry"]["id"] == "00000000-0000-0000-0000-000000000006"
    assert by_name["Out of events"]["id"] == "00000000-0000-0000-0000-000000000007"
    assert by_name["Out of order entry"]["reserved"] is by_name["Out of events"]["reserved"] is True
    users = [label for label in labels if not label["reserved"]]
    assert len(users) >= 2
    for label in labels:
        one = session.get(f"{emu.base_url}/log_search/management/labels/{label['id']}")
        assert one.json() == {"label": label}
    page = session.get(
        f"{emu.base_url}/query/logs/{':'.join(emu.log_ids)}", params={**WINDOW, "per_page": 500}
    ).json()
    carried = {x["id"] for e in page["events"] for x in e["labels"]}
    assert {label["id"] for label in users} <= carried, "events carry the user labels"
    assert carried <= {label["id"] for label in labels}, "every carried label is listed"
    stats = emu.stats()["budgets"]["management"]
    assert stats["requests"] == 1 + len(labels), "management budget family"


# ----------------------------------------------------------------- 4. running statistics
def test_running_count_query_answers_the_statistics_shape_with_partial_counts(
    emulator_factory, session_for
):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=4)
    session = session_for(emu)
    start = session.get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
        params={**WINDOW, "query": "calculate(count)"},
    )
    assert start.status_code == 202
    partials = [start.json()]
    self_href = _links(start.json())["Self"]
    final = None
    for _ in range(10):  # bounded: 4 polls make it ready
        body = session.get(self_href).json()
        if "Self" not in _links(body):
            final = body
            break
        assert _links(body)["Self"] == self_href
        partials.append(body)
    assert final is not None
    assert len(partials) == 4
    first = partials[0]["partial"]
    assert first["status"] == 204, "nothing matched yet: Rapid7's 204 with empty stats"
    assert first["stats"] == {}
    assert first["timeseries"] == {}
    assert first["count"] == 0
    counts = []
    for body in partials[1:]:
        assert body["events"] == []
        assert 0 < body["progress"] < 100
        partial = body["partial"]
        assert set(partial) >= set(final["statistics"]) - {"all_exact_result"}
        assert partial["status"] == 200
        assert partial["type"] == "count"
        assert (partial["from"], partial["to"]) == (WINDOW["from"], WINDOW["to"])
        assert partial["stats"]["global_timeseries"]["count"] == partial["count"]
        assert (
            sum(s["count"] for s in partial["timeseries"]["global_timeseries"])
            == (partial["count"])
        )
        counts.append(partial["count"])
    total = final["statistics"]["count"]
    assert total == len(emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0]))
    assert 0 < counts[0] < counts[1] < counts[2] < total, "counts so far grow"


def test_running_count_with_no_match_stays_204_until_finished(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=2)
    session = session_for(emu)
    start = session.get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
        params={**WINDOW, "query": "where(no-such-text) calculate(count)"},
    ).json()
    poll = session.get(_links(start)["Self"]).json()
    assert poll["partial"]["status"] == 204
    assert poll["partial"]["stats"] == {}
    final = session.get(_links(start)["Self"]).json()
    assert final["statistics"]["status"] == 200
    assert final["statistics"]["count"] == 0


# ----------------------------------------------------------------- 5. context
def _context(session: requests.Session, href: str, max_polls: int = 10) -> tuple[dict, int]:
    """Start a Context query and poll it to the page; returns (page, polls)."""
    response = session.get(href)
    assert response.status_code in (200, 202)
    body = response.json()
    polls = 0
    while "Self" in _links(body):
        assert polls < max_polls, "context query never finished"
        polls += 1
        response = session.get(_links(body)["Self"])
        assert response.status_code == 200
        body = response.json()
    return body, polls


def test_context_answers_202_with_a_self_link_then_the_page(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=2)
    session = session_for(emu)
    events = emu.events(emu.log_ids[0], WINDOW["from"], WINDOW["to"])
    target = events[300]
    href = target["links"][0]["href"]
    assert urlsplit(href).path == f"/query/context/{target['sequence_number_str']}"
    start = session.get(href)
    assert start.status_code == 202
    body = start.json()
    assert set(body) == {"logs", "leql", "progress", "id", "events", "links"}
    assert body["logs"] == [emu.log_ids[0]]
    assert body["events"] == []
    assert body["leql"]["statement"] is None
    assert _links(body)["Self"].startswith(f"{emu.base_url}/query/")
    page, polls = _context(session, href)
    assert polls == 2
    keys = [e["sequence_number_str"] for e in page["events"]]
    assert keys == [e["sequence_number_str"] for e in events[276:326]]
    assert page["leql"] == {
        "statement": None,
        "during": {"from": events[276]["timestamp"], "to": events[325]["timestamp"]},
    }
    assert set(_links(page)) == {"Prev", "Next"}
    assert emu.stats()["requests"]["context_queries_started"] == 2, "each GET is a query"


def test_context_prev_and_next_page_through_the_log_in_order(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=1)
    session = session_for(emu)
    events = emu.events(emu.log_ids[0], WINDOW["from"], WINDOW["to"])
    keys = [e["sequence_number_str"] for e in events]
    href = events[300]["links"][0]["href"].replace("per_page=50", "per_page=20")
    page, _ = _context(session, href)
    first = keys.index(page["events"][0]["sequence_number_str"])
    assert [e["sequence_number_str"] for e in page["events"]] == keys[first : first + 20]
    nxt, _ = _context(session, _links(page)["Next"])
    assert parse_qs(urlsplit(_links(page)["Next"]).query)["context_type"] == ["AFTER"]
    assert [e["sequence_number_str"] for e in nxt["events"]] == keys[first + 20 : first + 40]
    prev, _ = _context(session, _links(page)["Prev"])
    assert parse_qs(urlsplit(_links(page)["Prev"]).query)["context_type"] == ["BEFORE"]
    assert [e["sequence_number_str"] for e in prev["events"]] == keys[first - 20 : first]
    # BEFORE/AFTER leave the entry out; most_recent_first reverses the page
    before, _ = _context(session, href.replace("SURROUND", "BEFORE"))
    assert [e["sequence_number_str"] for e in before["events"]] == keys[280:300]
    after, _ = _context(session, href.replace("SURROUND", "AFTER") + "&most_recent_first=true")
    assert [e["sequence_number_str"] for e in after["events"]] == keys[301:321][::-1]


def test_context_stops_at_a_60_second_gap(emulator_factory, session_for):
    """Rapid7: the context runs "until there is a gap of 60 seconds between log entries"."""
    emu = emulator_factory(
        fixed_now_ms=NOW_MS, polls_before_ready=0, events_per_second=0.01, burst_probability=0
    )
    session = session_for(emu)
    events = emu.events(emu.log_ids[0], NOW_MS - 24 * HOUR_MS, NOW_MS)
    gaps = [b["timestamp"] - a["timestamp"] for a, b in itertools.pairwise(events)]
    # an entry with a > 60 s gap on both sides and, somewhere, a pair within 60 s
    lonely = next(i for i in range(1, len(events) - 1) if gaps[i - 1] > 60_000 and gaps[i] > 60_000)
    page, _ = _context(session, events[lonely]["links"][0]["href"])
    assert [e["sequence_number_str"] for e in page["events"]] == [
        events[lonely]["sequence_number_str"]
    ]
    assert "links" not in page or _links(page) == {}, "no Prev/Next past a gap"
    close = next(i for i, gap in enumerate(gaps) if gap <= 60_000)
    pair, _ = _context(session, events[close]["links"][0]["href"])
    assert events[close + 1]["sequence_number_str"] in [
        e["sequence_number_str"] for e in pair["events"]
    ]


def test_context_errors_follow_the_spec(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    session = session_for(emu)
    event = emu.events(emu.log_ids[0], WINDOW["from"], WINDOW["to"])[5]
    url = f"{emu.base_url}/query/context/{event['sequence_number_str']}"
    good = {"timestamp": event["timestamp"], "log_keys": emu.log_ids[0]}
    assert session.get(url, params={**good, "context_type": "SURROUND"}).status_code == 200
    for bad in ({"context_type": "AROUND"}, {"context_type": "AFTER", "timestamp": "x"}):
        response = session.get(url, params={**good, **bad})
        assert response.status_code == 400, bad
    unknown_log = session.get(
        url, params={**good, "context_type": "AFTER", "log_keys": "00000000-0000-0000-0000-0"}
    )
    assert unknown_log.status_code == 404
    wrong_seq = session.get(
        f"{emu.base_url}/query/context/{int(event['sequence_number_str']) + 4096 * 511}",
        params={**good, "context_type": "AFTER"},
    )
    assert wrong_seq.status_code == 404, "no such entry: 'invalid sequence number'"


def test_context_with_kvp_info(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)
    event = emu.events(emu.log_ids[0], WINDOW["from"], WINDOW["to"])[40]
    href = event["links"][0]["href"] + "&kvp_info=true"
    page, _ = _context(session_for(emu), href)
    assert all("kvp_info" in e for e in page["events"])
    assert all("kvp_info=true" in h for h in _links(page).values())


# ----------------------------------------------------------------- 6. management data
def test_logs_carry_structures_tokens_and_source_types(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, log_count=6, logset_count=3)
    session = session_for(emu)
    logs = session.get(f"{emu.base_url}/management/logs").json()["logs"]
    logsets = {ls["id"]: ls["name"] for ls in emu.logsets}
    for log in logs:
        assert len(log["structures"]) == 1
        internal = logsets[log["logsets_info"][0]["id"]] == "Internal Logs"
        assert log["source_type"] == ("internal" if internal else "token")
        assert log["tokens"] == [] if internal else len(log["tokens"]) == 1
    assert {log["source_type"] for log in logs} == {"token", "internal"}
    assert len({t for log in logs for t in log["tokens"]}) == 4, "tokens differ"
    again = EmulatorApp(EmulatorOptions(log_count=6, logset_count=3))
    assert [log.token for log in again.data.logs] == [(log["tokens"] or [""])[0] for log in logs], (
        "deterministic per seed"
    )


def test_related_topkeys_link_answers_the_specs_shape(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS)
    session = session_for(emu)
    log = session.get(f"{emu.base_url}/management/logs/{emu.log_ids[1]}").json()["log"]
    related = _links(log)["Related"]
    assert related.endswith(f"/management/logs/{emu.log_ids[1]}/topkeys")
    answer = session.get(related)
    assert answer.status_code == 200
    topkeys = answer.json()["topkeys"]
    assert 0 < len(topkeys) <= 10
    assert all(set(t) == {"key", "weight"} for t in topkeys)
    weights = [t["weight"] for t in topkeys]
    assert weights == sorted(weights, reverse=True)
    assert all(0 < w <= 1 for w in weights)
    assert "json.user" in [t["key"] for t in topkeys]
    unknown = session.get(f"{emu.base_url}/management/logs/not-a-log/topkeys")
    assert unknown.status_code == 404
    assert json.loads(unknown.content) == {"message": "HTTP 404 Not Found"}
