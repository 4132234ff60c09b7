"""A stand-in Kubernetes API server for `kubectl apply --dry-run=client`.

Client-side dry run still asks the server two things: discovery (which
group/version serves each kind, and whether it is namespaced) to map an
object to its REST path, and a GET of each object to decide between create
and patch. This answers discovery for the kinds `dynamo deploy` writes and
404 for every object, so kubectl reports each one "created (dry run)"
after parsing it; nothing is stored. No real cluster is reachable where the
tests run (a kube-apiserver is not in Debian).
"""

import http.server
import json
import threading

RESOURCES = {
    "v1": [("configmaps", "ConfigMap", True), ("services", "Service", True),
           ("namespaces", "Namespace", False)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
}


def _resource_list(gv):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
        {"name": n, "singularName": "", "namespaced": ns, "kind": k,
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
        for n, k, ns in RESOURCES[gv]]}


ROUTES = {
    "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0"},
    "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
        {"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/api/v1": _resource_list("v1"),
    "/apis/apps/v1": _resource_list("apps/v1"),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        self.server.requests.append(f"{self.command} {self.path.split('?')[0]}")

    def _send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in ROUTES:
            return self._send(200, ROUTES[path])
        self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                         "reason": "NotFound", "code": 404, "message": f"{path} not found"})

    def do_POST(self):  # a real apply would create; dry run must never get here
        self.server.writes += 1
        self._send(405, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 405})

    do_PUT = do_PATCH = do_DELETE = do_POST


class FakeAPIServer:
    def __init__(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.requests, self.httpd.writes = [], 0
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, path, namespace="default"):
        path.write_text(
            "apiVersion: v1\nkind: Config\n"
            f"clusters: [{{name: fake, cluster: {{server: \"{self.url}\"}}}}]\n"
            f"contexts: [{{name: fake, context: {{cluster: fake, user: u, namespace: {namespace}}}}}]\n"
            "users: [{name: u, user: {}}]\ncurrent-context: fake\n")
        return path

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
