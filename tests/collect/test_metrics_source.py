"""MetricsSource: a /metrics URL that carries headers and TLS settings, serialised as the URL alone."""

import copy
import pickle
import ssl

from pydantic import BaseModel

from kvbench.collect.scraper import MetricsSource, request_options


class Sources(BaseModel):
    sources: dict[str, str]


def test_a_metrics_source_is_its_url_and_keeps_its_credentials_when_copied():
    source = MetricsSource(
        "https://api:6443/metrics", headers={"Authorization": "Bearer t"}, verify_tls=False
    )
    assert source == "https://api:6443/metrics"
    for copied in (
        copy.deepcopy(source),
        pickle.loads(pickle.dumps(source)),
        dict({"a": source})["a"],
    ):
        assert copied.headers == {"Authorization": "Bearer t"} and copied.verify_tls is False
    assert (
        Sources(sources={"engine-0": source}).model_dump_json()
        == '{"sources":{"engine-0":"https://api:6443/metrics"}}'
    )


def test_request_options_follow_the_tls_settings():
    import certifi  # a PEM CA bundle that is always there (a dependency of the kubernetes client)

    assert request_options("http://127.0.0.1:1/metrics") == {}
    insecure = request_options(
        MetricsSource("https://x/metrics", headers={"H": "v"}, verify_tls=False)
    )
    assert insecure == {"headers": {"H": "v"}, "ssl": False}
    assert request_options(MetricsSource("https://x/metrics")) == {
        "headers": {}
    }  # system CAs, aiohttp's default
    context = request_options(MetricsSource("https://x/metrics", ca_file=certifi.where()))["ssl"]
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.cert_store_stats()["x509_ca"] > 0  # the CA file was loaded
