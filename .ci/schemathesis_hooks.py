"""Checks of our own for .ci/schemathesis.sh (loaded via SCHEMATHESIS_HOOKS).

`not_a_server_error` fails on every 5xx. The webhook receiver answers 503
with Retry-After by design while its site or integration is stopped (and
schemathesis stops them: it POSTs to every operation), and the document
says so. This check takes its place: a 5xx fails unless the operation
documents that very status, and a documented 503 must carry Retry-After.
A 500 is never documented, so it always fails.
"""

import schemathesis


@schemathesis.check
def no_undocumented_server_error(ctx, response, case):
    status = response.status_code
    if status < 500:
        return None
    responses = case.operation.definition.raw.get("responses", {})
    if str(status) not in responses:
        raise AssertionError(f"server error {status}: {response.text[:500]}")
    if status == 503 and "retry-after" not in {k.lower() for k in response.headers}:
        raise AssertionError("503 without Retry-After")
    return None
