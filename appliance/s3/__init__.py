"""S3 gateway (DESIGN.md §8): an ASGI app served by hypercorn's trio worker.

``from appliance.s3.app import S3App``; see app.py for the request flow, router.py for the
operations, controllers/ for their implementations.
"""
