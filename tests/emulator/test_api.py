"""Endpoints, prefixes, auth, errors, ordering, LEQL and statistics."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
import requests

from tests.emulator.conftest import HOUR_MS, NOW_MS
from tests.emulator.plain_client import pull

MINUTE_MS = 60_000
WINDOW = {"from": NOW_MS - HOUR_MS, "to": NOW_MS - HOUR_MS + 10 * MINUTE_MS}


@pytest.fixture
def emu(emulator_factory):
    return emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=0)


@pytest.fixture
def session(emu, session_for):
    return session_for(emu)


def test_management_endpoints_on_both_prefixes(emu, session):
    for prefix in ("", "/log_search"):
        base = emu.base_url + prefix
        logs = session.get(f"{base}/management/logs").json()["logs"]
        assert [log["id"] for log in logs] == emu.log_ids
        assert all(
            log["logsets_info"][0]["links"][0]["href"].startswith(f"{base}/management/")
            for log in logs
        )
        one = session.get(f"{base}/management/logs/{emu.log_ids[2]}").json()["log"]
        assert one == logs[2]
        logsets = session.get(f"{base}/management/logsets").json()["logsets"]
        assert [(ls["id"], ls["name"], [li["id"] for li in ls["logs_info"]]) for ls in logsets] == [
            (ls["id"], ls["name"], ls["log_ids"]) for ls in emu.logsets
        ]
        logset = session.get(f"{base}/management/logsets/{logsets[1]['id']}").json()["logset"]
        assert logset == logsets[1]


def test_queries_on_both_prefixes_link_back_to_the_same_prefix_and_host(emu, session):
    host_alias = f"localhost:{emu.port}"
    for prefix in ("", "/log_search"):
        response = session.get(
            f"{emu.base_url}{prefix}/query/logs/{emu.log_ids[0]}",
            params={**WINDOW, "per_page": 10},
            headers={"Host": host_alias},
        )
        body = response.json()
        assert response.status_code == 200
        next_href = body["links"][0]["href"]
        assert next_href.startswith(f"http://{host_alias}{prefix}/query/")
        context = body["events"][0]["links"][0]
        assert context["rel"] == "Context"
        assert context["href"].startswith(f"http://{host_alias}{prefix}/query/context/")
    a = pull(emu.base_url, emu.api_key, f"/query/logs/{emu.log_ids[0]}", WINDOW)
    b = pull(emu.base_url, emu.api_key, f"/log_search/query/logs/{emu.log_ids[0]}", WINDOW)
    assert a.keys == b.keys == emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0])


def test_auth_missing_wrong_forbidden_and_header_case(emu, session_for):
    url = f"{emu.base_url}/management/logs"
    for headers in ({}, {"X-Api-Key": "wrong"}):
        response = requests.get(url, headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json() == {"message": "Unauthorized"}
    assert requests.get(url, headers={"x-api-key": emu.api_key}, timeout=10).status_code == 200
    forbidden = session_for(emu, key=emu.options.forbidden_api_key).get(url)
    assert forbidden.status_code == 403
    query = requests.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW, timeout=10)
    assert query.status_code == 401


def test_custom_api_key(emulator_factory):
    emu = emulator_factory(api_key="s3cret", forbidden_api_key=None)
    url = f"{emu.base_url}/management/logs"
    assert requests.get(url, headers={"X-Api-Key": "s3cret"}, timeout=10).status_code == 200
    assert requests.get(url, headers={"X-Api-Key": "emulator-key"}, timeout=10).status_code == 401
    assert requests.get(url, headers={"X-Api-Key": "forbidden-key"}, timeout=10).status_code == 401


@pytest.mark.parametrize(
    "case",
    [
        ("/query/logs/{log}", {}, 400, 100000),
        ("/query/logs/{log}", {"from": 1}, 400, 100000),
        ("/query/logs/{log}", {"from": "x", "to": 5}, 400, 100001),
        ("/query/logs/{log}", {"from": 10, "to": 5}, 400, 100001),
        ("/query/logs/{log}", {**WINDOW, "per_page": 0}, 400, 100003),
        ("/query/logs/{log}", {**WINDOW, "per_page": "many"}, 400, 100003),
        ("/query/logs/{log}", {**WINDOW, "query": "where(a=b"}, 400, 100031),
        ("/query/logs/{log}", {**WINDOW, "query": "groupby(user)"}, 400, 100031),
        ("/query/logs/{log}", {**WINDOW, "query": "where(/[/)"}, 400, 100031),
        ("/query/logs/{log}", {"time_range": "next week"}, 400, 100001),
        ("/query/logs/00000000-0000-0000-0000-00000000dead", WINDOW, 404, None),
        ("/query/logs/{log}:00000000-0000-0000-0000-00000000dead", WINDOW, 404, None),
        ("/query/logsets/nope", WINDOW, 404, None),
        ("/query/logsets", {**WINDOW, "logset_name": "No Such Set"}, 404, None),
        ("/query/no:such:continuation:", {}, 400, 100006),
        ("/management/logs/nope", {}, 404, None),
        ("/management/nothing", {}, 404, None),
        ("/management/labels/00000000-0000-0000-0000-000000000099", {}, 404, None),
    ],
)
def test_error_answers(emu, session, case):
    path, params, status, code = case
    response = session.get(emu.base_url + path.format(log=emu.log_ids[0]), params=params)
    assert response.status_code == status
    body = response.json()
    if code is None:
        assert body["message"] == "HTTP 404 Not Found"
    else:
        assert body["errorCode"] == code
        assert body["message"]


def test_post_query_and_invalid_body(emu, session):
    body = {
        "logs": emu.log_ids[:2],
        "leql": {"statement": "where()", "during": {"from": WINDOW["from"], "to": WINDOW["to"]}},
    }
    response = session.post(f"{emu.base_url}/query/logs", json=body, params={"per_page": 7})
    assert response.status_code == 200
    page = response.json()
    assert len(page["events"]) == 7
    assert page["leql"] == body["leql"]
    assert page["logs"] == emu.log_ids[:2]
    bad = session.post(
        f"{emu.base_url}/query/logs",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 400
    assert bad.json()["errorCode"] == 100005
    unknown = session.post(
        f"{emu.base_url}/query/logs",
        json={**body, "logs": ["00000000-0000-0000-0000-00000000dead"]},
    )
    assert unknown.status_code == 404


def test_post_with_time_range(emu, session):
    body = {
        "logs": [emu.log_ids[0]],
        "leql": {"statement": "", "during": {"time_range": "Last 10 Minutes"}},
    }
    page = session.post(f"{emu.base_url}/query/logs", json=body).json()
    assert page["leql"]["during"] == {
        "from": NOW_MS - 10 * MINUTE_MS,
        "to": NOW_MS,
        "time_range": "Last 10 Minutes",
    }
    assert page["events"]


def test_multi_log_keys_and_logsets_merge_in_order(emu):
    from_ms, to_ms = WINDOW["from"], WINDOW["to"]
    joined = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{emu.log_ids[0]}:{emu.log_ids[1]}",
        {**WINDOW, "per_page": 300},
    )
    expected = set(
        emu.truth(from_ms, to_ms, emu.log_ids[0]) + emu.truth(from_ms, to_ms, emu.log_ids[1])
    )
    assert set(joined.keys) == expected
    assert len(joined.keys) == len(expected)
    order = [(e["timestamp"], e["sequence_number"]) for e in joined.events]
    assert order == sorted(order)
    logset = emu.logsets[0]
    by_id = pull(emu.base_url, emu.api_key, f"/query/logsets/{logset['id']}", WINDOW)
    by_name = pull(
        emu.base_url, emu.api_key, "/query/logsets", {**WINDOW, "logset_name": logset["name"]}
    )
    members = {k for log_id in logset["log_ids"] for k in emu.truth(from_ms, to_ms, log_id)}
    assert set(by_id.keys) == members == set(by_name.keys)
    both = pull(
        emu.base_url,
        emu.api_key,
        "/query/logsets",
        {**WINDOW, "logset_name": [ls["name"] for ls in emu.logsets]},
    )
    assert set(both.keys) == set(emu.truth(from_ms, to_ms))


def test_most_recent_first_reverses_the_order(emu):
    log_id = emu.log_ids[0]
    newest = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{log_id}",
        {**WINDOW, "per_page": 45, "most_recent_first": "true"},
    )
    assert newest.keys == list(reversed(emu.truth(WINDOW["from"], WINDOW["to"], log_id)))


@pytest.mark.parametrize("from_inclusive", [True, False])
def test_sequence_number_parameter_continues_strictly_after_it(emulator_factory, from_inclusive):
    """Rapid7: "additionally include all log entries received in the `from` millisecond which
    have sequence numbers larger than the one specified" -- larger, not equal."""
    emu = emulator_factory(
        fixed_now_ms=NOW_MS,
        polls_before_ready=0,
        from_inclusive=from_inclusive,
        burst_probability=1.0,
    )
    log_id = emu.log_ids[0]
    events = emu.events(log_id, WINDOW["from"], WINDOW["to"])
    keys = [(e["log_id"], e["timestamp"], e["sequence_number_str"]) for e in events]
    # an entry in the middle of a millisecond: entries of that millisecond on both sides
    middle = next(
        i
        for i in range(1, len(events) - 1)
        if events[i - 1]["timestamp"] == events[i]["timestamp"] == events[i + 1]["timestamp"]
    )
    start = events[middle]
    result = pull(
        emu.base_url,
        emu.api_key,
        f"/query/logs/{log_id}",
        {
            "from": start["timestamp"],
            "to": WINDOW["to"],
            "per_page": 500,
            "sequence_number": start["sequence_number_str"],
        },
    )
    assert result.keys == keys[middle + 1 :]


def test_where_substring_key_value_and_regex(emu):
    log_id = emu.log_ids[0]
    events = emu.events(log_id, WINDOW["from"], WINDOW["to"])

    def served(statement: str) -> list[str]:
        result = pull(
            emu.base_url,
            emu.api_key,
            f"/query/logs/{log_id}",
            {**WINDOW, "query": statement, "per_page": 500},
        )
        return [key[2] for key in result.keys]

    everything = [e["sequence_number_str"] for e in events]
    assert served("") == served("where()") == everything
    sshd = [e["sequence_number_str"] for e in events if "sshd[" in e["message"]]
    assert 0 < len(sshd) < len(events)
    assert served("where(sshd[)") == served('where("sshd[")') == sshd
    failures = [e["sequence_number_str"] for e in events if '"result":"FAILURE"' in e["message"]]
    assert len(failures) > 0
    assert served("where(result=FAILURE)") == served('where(result="FAILURE")') == failures
    regex = [e["sequence_number_str"] for e in events if "accepted" in e["message"].lower()]
    assert served("where(/ACCEPTED publickey/i)") == regex == sshd


def _finish(session: requests.Session, response: requests.Response) -> tuple[dict, int]:
    body, polls = response.json(), 0
    while any(link["rel"].lower() == "self" for link in body.get("links", [])):
        polls += 1
        body = session.get(body["links"][0]["href"]).json()
    return body, polls


def test_calculate_count_is_exact_also_through_polling(emulator_factory, session_for):
    emu = emulator_factory(fixed_now_ms=NOW_MS, polls_before_ready=2)
    session = session_for(emu)
    response = session.get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}:{emu.log_ids[3]}",
        params={**WINDOW, "query": "where(result=SUCCESS) calculate(count)"},
    )
    assert response.status_code == 202
    assert response.json()["partial"]["type"] == "count"
    body, polls = _finish(session, response)
    assert polls == 2
    expected = sum(
        1
        for log_id in (emu.log_ids[0], emu.log_ids[3])
        for e in emu.events(log_id, WINDOW["from"], WINDOW["to"])
        if '"result":"SUCCESS"' in e["message"]
    )
    stats = body["statistics"]
    assert stats["count"] == expected > 0
    assert stats["stats"]["global_timeseries"]["count"] == expected
    assert sum(s["count"] for s in stats["timeseries"]["global_timeseries"]) == expected
    assert "events" not in body
    assert "links" not in body
    everything, _ = _finish(
        session,
        session.get(
            f"{emu.base_url}/query/logs/{emu.log_ids[0]}",
            params={**WINDOW, "query": "calculate(count)"},
        ),
    )
    assert everything["statistics"]["count"] == len(
        emu.truth(WINDOW["from"], WINDOW["to"], emu.log_ids[0])
    )


def test_context_link_returns_neighbours(emu, session):
    page = session.get(
        f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params={**WINDOW, "per_page": 120}
    ).json()
    target = page["events"][60]
    context = session.get(target["links"][0]["href"]).json()  # per_page=50, SURROUND
    keys = [e["sequence_number_str"] for e in context["events"]]
    # 24 before, the entry, 25 after: exactly per_page entries
    assert keys == [e["sequence_number_str"] for e in page["events"][36:86]]


def test_stats_endpoint_counts_requests(emu, session):
    session.get(f"{emu.base_url}/management/logs")
    session.get(f"{emu.base_url}/query/logs/{emu.log_ids[0]}", params=WINDOW)
    stats = requests.get(f"{emu.base_url}/_emulator/stats", timeout=10).json()
    assert stats == emu.stats()
    assert stats["api_requests"] == 2
    assert stats["requests"]["management_requests"] == 1
    assert stats["requests"]["pages_served"] == 1
    assert stats["status_counts"] == {"200": 2}


def test_responses_are_json_with_keep_alive(emu, session):
    first = session.get(f"{emu.base_url}/management/logs")
    assert first.headers["Content-Type"] == "application/json"
    assert urlsplit(emu.base_url).hostname == "127.0.0.1"
    for _ in range(3):
        session.get(f"{emu.base_url}/management/logs")
    assert emu.stats()["connections"] == 1, "one keep-alive connection served every request"


def test_emulator_namespace_errors(emu):
    base = f"{emu.base_url}/_emulator"
    assert requests.get(f"{base}/truth", params={"from": 1}, timeout=10).status_code == 400
    unknown = requests.get(
        f"{base}/truth", params={"from": 1, "to": 2, "log_id": "nope"}, timeout=10
    )
    assert unknown.status_code == 404
    assert requests.get(f"{base}/nothing", timeout=10).status_code == 404


def test_bad_post_bodies_and_context_parameters(emu, session):
    for body in ({"logs": []}, {"logs": "one"}, {"leql": {}}, []):
        response = session.post(f"{emu.base_url}/query/logs", json=body)
        assert response.status_code == 400, body
        assert response.json()["errorCode"] == 100005
    bad_context = session.get(
        f"{emu.base_url}/query/context/123", params={"timestamp": "x", "log_keys": emu.log_ids[0]}
    )
    assert bad_context.status_code == 400, "Rapid7: 400 Invalid Context Request"
    assert bad_context.json()["message"] == "Invalid Context Request"
    put = session.put(f"{emu.base_url}/query/logs")
    assert put.status_code == 501


def test_statement_parser_edge_cases(emu):
    from logsearch_emulator.leql import StatementError, parse_statement

    assert parse_statement('where("a (b) c")').matches("x a (b) c") is True
    assert parse_statement("WHERE(user=alice) CALCULATE(COUNT)").is_count
    nested = parse_statement("where(a.b=true)").matches
    assert nested('{"a": {"b": true}}')
    assert not nested('{"a": {"b": false}}')
    assert not nested('{"a": 1}')
    assert not nested("plain text")
    assert not nested("{broken")
    assert parse_statement("where(x=null)").matches('{"x": null}')
    assert parse_statement("where(n=3)").matches('{"n": 3}')
    assert parse_statement('where("x)")').matches("a x) b")
    for bad in ('where("open)', "where(a=b", "where(a(b)", "where((a))", "count()"):
        with pytest.raises(StatementError):
            parse_statement(bad)
