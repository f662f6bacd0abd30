"""Who sees what: Sidecar egress scoping, exportTo, and Gateways for router proxies."""

from __future__ import annotations

from controlplane._protos import CLUSTER, LISTENER, ROUTE
from controlplane._proxies import ROUTER
from tests.controlplane._fixtures import config, generated, mesh_of, sidecar


def service(name: str, namespace: str, port: int = 9080, export: str = "") -> str:
    export_line = f"\n  exportTo: ['{export}']" if export else ""
    return f"""
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  hosts: [{name}.{namespace}.svc.cluster.local]
  ports: [{{number: {port}, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1}}]{export_line}
"""


SERVICES = (service("reviews", "default"), service("ratings", "default"), service("billing", "finance"),
            service("secret", "finance", export="."))


def clusters_seen(*extra: str, proxy: object = None) -> set[str]:
    snapshot = generated(mesh_of(*SERVICES, *extra), proxy or sidecar())  # type: ignore[arg-type]
    return {name.split("|")[3] for name in snapshot.resources(CLUSTER) if name.startswith("outbound|")}


def test_export_to_dot_hides_a_service_from_other_namespaces() -> None:
    assert clusters_seen() == {"reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local",
                               "billing.finance.svc.cluster.local"}
    finance = sidecar("pay", namespace="finance")
    assert "secret.finance.svc.cluster.local" in clusters_seen(proxy=finance)


def test_sidecar_egress_limits_what_a_proxy_sees() -> None:
    namespace_default = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  egress: [{hosts: ["./*"]}]
"""
    selected = """
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: productpage}
spec:
  workloadSelector: {labels: {app: productpage}}
  egress: [{hosts: ["./reviews.default.svc.cluster.local", "finance/*"]}]
"""
    assert clusters_seen(namespace_default) == {"reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local"}
    assert clusters_seen(namespace_default, selected) == {"reviews.default.svc.cluster.local",
                                                          "billing.finance.svc.cluster.local"}
    other = sidecar("details", labels={"app": "details"})
    assert clusters_seen(namespace_default, selected, proxy=other) == {
        "reviews.default.svc.cluster.local", "ratings.default.svc.cluster.local"}
    root = namespace_default.replace("name: default}", "name: default, namespace: istio-system}").replace(
        '"./*"', '"~/*"')
    assert clusters_seen(root) == set()  # mesh-wide default: see nothing unless a namespace says otherwise


GATEWAY = """
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bookinfo-gateway}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: bookinfo}
spec:
  hosts: ["*"]
  gateways: [bookinfo-gateway]
  http:
  - match: [{uri: {prefix: /reviews}}]
    route: [{destination: {host: reviews, port: {number: 9080}}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: mesh-only}
spec:
  hosts: [ratings]
  http: [{route: [{destination: {host: ratings}}]}]
"""


def test_gateway_serves_virtual_services_bound_to_it() -> None:
    router = sidecar("ingress", namespace="default", labels={"istio": "ingressgateway"}, type=ROUTER,
                     outbound_ports={8080: 18080})
    snapshot = generated(mesh_of(*SERVICES, GATEWAY), router)
    assert set(snapshot.resources(LISTENER)) == {"0.0.0.0_8080"}
    listener = config(snapshot, LISTENER, "0.0.0.0_8080")
    assert listener["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 18080}
    route_config = config(snapshot, ROUTE, "http.8080")
    [vhost] = route_config["virtual_hosts"]
    assert vhost["domains"] == ["*", "*:8080"]
    assert vhost["routes"][0]["match"] == {"prefix": "/reviews"}
    assert vhost["routes"][0]["route"]["cluster"] == "outbound|9080||reviews.default.svc.cluster.local"
    sidecar_snapshot = generated(mesh_of(*SERVICES, GATEWAY), sidecar())
    assert "http.8080" not in sidecar_snapshot.resources(ROUTE)  # bound to the gateway, not the mesh


def test_consistent_hash_sets_cluster_policy_and_route_hash() -> None:
    rule = """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews
  trafficPolicy:
    loadBalancer: {consistentHash: {httpCookie: {name: user, ttl: 0s}, ringHash: {minimumRingSize: 1024}}}
  subsets:
  - name: v2
    labels: {version: v2}
    trafficPolicy: {loadBalancer: {consistentHash: {httpHeaderName: x-user}}}
"""
    route = """
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - match: [{headers: {end-user: {exact: jason}}}]
    route: [{destination: {host: reviews, subset: v2}}]
  - route: [{destination: {host: reviews}}]
"""
    snapshot = generated(mesh_of(*SERVICES, rule, route), sidecar())
    default = config(snapshot, CLUSTER, "outbound|9080||reviews.default.svc.cluster.local")
    assert default["lb_policy"] == "RING_HASH" and default["ring_hash_lb_config"] == {"minimum_ring_size": "1024"}
    vhost = next(v for v in config(snapshot, ROUTE, "9080")["virtual_hosts"] if v["name"].startswith("reviews."))
    assert vhost["routes"][0]["route"]["hash_policy"] == [{"header": {"header_name": "x-user"}}]
    assert vhost["routes"][1]["route"]["hash_policy"] == [{"cookie": {"name": "user", "ttl": "0s"}}]


def test_tcp_routes_become_weighted_tcp_proxy() -> None:
    database = """
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.default.svc.cluster.local]
  ports: [{number: 5432, name: tcp, protocol: TCP}]
  endpoints: [{address: 127.0.0.1, labels: {version: a}}, {address: 127.0.0.2, labels: {version: b}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: db}
spec: {host: db, subsets: [{name: a, labels: {version: a}}, {name: b, labels: {version: b}}]}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: db}
spec:
  hosts: [db]
  tcp:
  - match: [{port: 5432}]
    route:
    - {destination: {host: db, subset: a}, weight: 80}
    - {destination: {host: db, subset: b}, weight: 20}
"""
    listener = config(generated(mesh_of(database), sidecar()), LISTENER, "0.0.0.0_5432")
    tcp = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert tcp["weighted_clusters"] == {"clusters": [
        {"name": "outbound|5432|a|db.default.svc.cluster.local", "weight": 80},
        {"name": "outbound|5432|b|db.default.svc.cluster.local", "weight": 20}]}
    assert "cluster" not in tcp
