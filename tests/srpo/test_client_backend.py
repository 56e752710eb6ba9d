"""The server backend of the vLLM engine sends one request per row: concurrently to a server, one
after the other from the calling thread to a client that takes one at a time (an in-process
offline vLLM stand-in). No vLLM needed: the client is a recording stand-in."""

import threading
import time

import pytest

from srpo.engines.vllm import ClientBackend


class Recorder:
    def __init__(self, limit=None):
        if limit is not None:
            self.max_concurrent_requests = limit
        self.threads, self.active, self.most = [], 0, 0
        self.lock = threading.Lock()

    def generate(
        self,
        prompts,
        n=1,
        temperature=1.0,
        top_p=1.0,
        max_tokens=16,
        logprobs=None,
        generation_kwargs=None,
    ):
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
            self.threads.append(threading.get_ident())
        time.sleep(0.02)  # long enough for a thread pool to overlap calls
        with self.lock:
            self.active -= 1
        return {"completion_ids": [[len(prompts[0])]], "logprobs": None}


def _params(k):
    return [
        {"temperature": 0.0, "top_p": 1.0, "max_tokens": 4, "n": 1, "seed": i} for i in range(k)
    ]


def test_a_one_request_client_is_called_in_order_from_the_calling_thread():
    client = Recorder(limit=1)
    out = ClientBackend(client).generate([[1] * (i + 1) for i in range(8)], _params(8))
    assert [o.token_ids for o in out] == [[i + 1] for i in range(8)]  # in row order
    assert client.most == 1 and set(client.threads) == {threading.get_ident()}


def test_a_server_client_gets_concurrent_requests():
    client = Recorder()
    out = ClientBackend(client).generate([[1] * (i + 1) for i in range(8)], _params(8))
    assert [o.token_ids for o in out] == [[i + 1] for i in range(8)]
    assert client.most > 1 and threading.get_ident() not in client.threads
    with pytest.raises(ValueError, match="max_workers"):
        ClientBackend(client, max_workers=0)
