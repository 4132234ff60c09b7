"""The C hello-world graph declared from Python: each C service names its
dependencies, so the graph is followed from the entry as for Python."""

import os

from dynamo.sdk import c_service

BUILD = os.environ.get("DYN_BUILD", os.path.join(os.path.dirname(__file__), "..", "..", "..", "build"))
LIB = os.path.join(BUILD, "examples/hello_world_c/libhello_services.so")

Backend = c_service(LIB, "Backend", namespace="hello")
Middle = c_service(LIB, "Middle", namespace="hello", depends=[Backend])
Frontend = c_service(LIB, "Frontend", namespace="hello", depends=[Middle], http_port=8000,
                     endpoints={})
