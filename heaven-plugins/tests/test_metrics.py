"""/metrics in Prometheus' text format: requests counted by route, method and status, latency by
route, requests in flight, and the database pool, as prometheus-client's own parser reads them."""

import httpx
from heaven.constants import DEFAULT
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from conftest import PASSWORD
from heaven_plugins import metrics


async def scrape(http: httpx.AsyncClient) -> dict[str, list]:
    """Every sample of /metrics, by metric family name."""
    response = await http.get(metrics.ROUTE)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def values(samples: list, name: str, **labels: str) -> list[float]:
    return [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]


async def test_requests_are_counted_by_route_method_and_status(migrated, serve, conn):
    # GET /users unsigned: the sign-in check's 401s are counted like any other answer.
    sent = {("/users", "GET", "401"): 7, ("/users", "POST", "201"): 2, ("/users", "POST", "422"): 3}
    async with httpx.AsyncClient(base_url=await serve(migrated)) as http:
        for _ in range(7):
            await http.get("/users")
        for i in range(2):
            await http.post("/users", json={"email": f"m{i}@example.com", "name": "M", "password": PASSWORD})
        for _ in range(3):
            await http.post("/users", json={"email": "nope", "name": "M"})
        await http.get("/nowhere")
        await http.put("/users")
        families = await scrape(http)

    requests = families["http_requests"]
    for (route, method, status), count in sent.items():
        assert values(requests, "http_requests_total", route=route, method=method, status=status) == [count]
    assert values(requests, "http_requests_total", route="unmatched", method="GET", status="404") == [1]
    assert values(requests, "http_requests_total", route="unmatched", method="PUT", status="405") == [1]
    # The scrape counts itself only once it is answered: nothing for /metrics yet.
    assert sum(s.value for s in requests if s.name == "http_requests_total") == 14

    latency = families["http_request_duration_seconds"]
    for (route, method), count in {("/users", "GET"): 7, ("/users", "POST"): 5}.items():
        labels = {"route": route, "method": method}
        buckets = [s for s in latency if s.name.endswith("_bucket") and labels.items() <= s.labels.items()]
        assert [s.labels["le"] for s in buckets][-1] == "+Inf"
        assert [s.value for s in buckets] == sorted(s.value for s in buckets)  # cumulative
        assert buckets[-1].value == count
        assert values(latency, "http_request_duration_seconds_count", route=route, method=method) == [count]
        (seconds,) = values(latency, "http_request_duration_seconds_sum", route=route, method=method)
        assert 0 < seconds < count * 10


async def test_the_pool_and_the_database_are_shown(migrated, serve):
    async with httpx.AsyncClient(base_url=await serve(migrated, pool_min_size=2, pool_max_size=5)) as http:
        await http.get("/users")
        families = await scrape(http)
        again = await scrape(http)
    assert families["http_requests_in_flight"][0].value == 1  # the scrape itself
    assert 2 <= families["db_pool_connections"][0].value <= 5
    assert 0 <= families["db_pool_idle_connections"][0].value <= families["db_pool_connections"][0].value
    assert families["db_pool_waiting_requests"][0].value == 0
    assert families["db_available"][0].value == 1
    assert values(families["db_outages"], "db_outages_total") == [0]
    assert values(again["http_requests"], "http_requests_total", route="/metrics", method="GET", status="200") == [1]
    assert "process_resident_memory_bytes" in families  # what prometheus-client shows of the process


async def test_metrics_off_leave_no_route(migrated, serve):
    async with httpx.AsyncClient(base_url=await serve(migrated, metrics="false")) as http:
        assert (await http.get(metrics.ROUTE)).status_code == 404


def test_the_route_is_public_and_left_out_of_the_docs(new_app):
    app = new_app()
    (entry,) = [e for e in app.discover(DEFAULT) if e["route"] == metrics.ROUTE]
    assert entry["handler"].public is True
    assert entry["documented"] is False


def test_counts_folded_at_scrape_match_what_observe_records(new_app):
    # The fold adds many observations to prometheus-client's histogram at once, through the values
    # its observe() adds to; the text must be what observing them one by one gives.
    samples = [0.0004, 0.001, 0.0011, 0.003, 0.02, 0.02, 0.7, 3.0, 12.0]
    folded = metrics.Metrics()
    folded.install(new_app(metrics="false"))
    for seconds in samples:
        folded.observe({"method": "GET"}, _Answered(200), "/users", seconds)
    folded.fold()

    registry = CollectorRegistry()
    observed = Histogram(
        "http_request_duration_seconds", "x", ["route", "method"], buckets=metrics.BUCKETS, registry=registry
    ).labels("/users", "GET")
    for seconds in samples:
        observed.observe(seconds)

    def histogram(text: bytes) -> list:
        families = {f.name: f for f in text_string_to_metric_families(text.decode())}
        samples = families["http_request_duration_seconds"].samples
        return sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in samples)

    assert histogram(generate_latest(folded.registry)) == histogram(generate_latest(registry))


class _Answered:
    def __init__(self, status: int) -> None:
        self.status = status
