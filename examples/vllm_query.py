"""Send one completion request to the endpoint a vllm job recorded, and print the answer.

    python examples/vllm_query.py --job JOBID [--prompt TEXT] [--max-tokens N]
    python examples/vllm_query.py --endpoint-file vllm-endpoint-JOBID.json
    python examples/vllm_query.py --url http://10.100.0.1:8000

``--job`` reads the endpoint from the job's run record (``endpoint.json``, written by the job once
``/health`` answered; the same URL ``hpcjobs status`` shows). The request is OpenAI's
``POST /v1/completions`` with the model name the server lists at ``GET /v1/models``. Standard
library only, so it runs on a login node without vLLM installed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def endpoint_of_job(job_id: str) -> dict:
    from hpcjobs import runs

    run = runs.find(job_id)
    if run is None:
        raise SystemExit(f"vllm_query: no hpcjobs record of job {job_id} (HPCJOBS_RUNS_DIR?)")
    path = run.path / "endpoint.json"
    if not path.exists():
        raise SystemExit(f"vllm_query: job {job_id} has not recorded an endpoint yet ({path}); "
                         "the server is still starting, or the job failed: hpcjobs logs / status")
    return json.loads(path.read_text())


def get(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.load(r)


def complete(base: str, prompt: str, max_tokens: int, timeout: float, model: str | None = None) -> dict:
    """One greedy completion; returns the server's JSON answer."""
    if model is None:
        model = get(base + "/v1/models", timeout)["data"][0]["id"]
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": max_tokens,
                       "temperature": 0}).encode()
    req = urllib.request.Request(base + "/v1/completions", data=body,
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--job", help="job id of an hpcjobs vllm job")
    g.add_argument("--endpoint-file", help="endpoint JSON written by the job")
    g.add_argument("--url", help="server base URL, e.g. http://10.100.0.1:8000")
    p.add_argument("--prompt", default="Slurm allocates nodes and")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--timeout", type=float, default=300, help="seconds for the request")
    a = p.parse_args(argv)
    if a.job:
        info = endpoint_of_job(a.job)
    elif a.endpoint_file:
        with open(a.endpoint_file) as f:
            info = json.load(f)
    else:
        info = {"url": a.url.rstrip("/")}
    base = info["url"]
    t0 = time.monotonic()
    try:
        answer = complete(base, a.prompt, a.max_tokens, a.timeout)
    except (urllib.error.URLError, OSError) as e:
        print(f"vllm_query: {base}: {e}", file=sys.stderr)
        return 1
    took = time.monotonic() - t0
    choice = answer["choices"][0]
    usage = answer.get("usage", {})
    print(f"endpoint {base} model {answer.get('model')}")
    print(f"prompt: {a.prompt!r}")
    print(f"completion: {choice['text']!r}")
    print(f"tokens: prompt {usage.get('prompt_tokens')}, completion {usage.get('completion_tokens')}"
          f", finish {choice.get('finish_reason')}; {took:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
