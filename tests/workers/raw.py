"""What someone who can reach Redis but holds no shared key writes there, by hand.

No project code: the order and status hashes as ``tasks.client.submit`` of
schema version 1 stored them, and a Celery (protocol 2) task message built
field by field and LPUSHed on the queue's list, as kombu's Redis transport
does. The security tests drive their attacks with these and read the outcome
back with plain Redis commands.
"""

from __future__ import annotations

import base64
import json
import time
import uuid

import redis


def old_order(kind: str, fields: dict, options: dict) -> dict:
    """An order document of schema version 1 (secrets in clear or a copied ``{"$sealed": ...}``)."""
    return {"v": 1, "type": kind, "fields": fields, "options": options}


def celery_message(task: str, transfer_id: str, queue: str) -> str:
    body = base64.b64encode(
        json.dumps([[transfer_id], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()
    ).decode()
    return json.dumps(
        {
            "body": body,
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {
                "lang": "py",
                "task": task,
                "id": transfer_id,
                "shadow": None,
                "eta": None,
                "expires": None,
                "group": None,
                "group_index": None,
                "retries": 0,
                "timelimit": [None, None],
                "root_id": transfer_id,
                "parent_id": None,
                "argsrepr": repr([transfer_id]),
                "kwargsrepr": "{}",
                "origin": "attacker@nowhere",
                "ignore_result": False,
            },
            "properties": {
                "correlation_id": transfer_id,
                "reply_to": str(uuid.uuid4()),
                "delivery_mode": 2,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "priority": 0,
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def inject(
    client: redis.Redis,
    prefix: str,
    queue: str,
    transfer_id: str,
    order: dict,
    extra_fields: dict | None = None,
    task: str = "faspq.file_upload",
) -> None:
    """Order hash + status hash + task message: everything a worker needs to pick the transfer up."""
    client.hset(
        f"{prefix}:order:{transfer_id}",
        mapping={
            "type": order["type"],
            "task": task,
            "queue": queue,
            "order": json.dumps(order),
            "retry": json.dumps({"max_retries": 0}),
            **(extra_fields or {}),
        },
    )
    client.hset(
        f"{prefix}:status:{transfer_id}",
        mapping={"state": "QUEUED", "order_type": order["type"], "queue": queue, "created": repr(time.time())},
    )
    client.lpush(queue, celery_message(task, transfer_id, queue))


def wait_end(client: redis.Redis, prefix: str, transfer_id: str, timeout: float = 60) -> dict:
    """The final result a worker wrote into the status hash."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = client.hgetall(f"{prefix}:status:{transfer_id}")
        if status.get(b"state") in (b"SUCCEEDED", b"FAILED") and b"result" in status:
            return json.loads(status[b"result"])
        time.sleep(0.1)
    raise TimeoutError(f"transfer {transfer_id} did not end: {client.hgetall(f'{prefix}:status:{transfer_id}')}")


def events(client: redis.Redis, prefix: str, transfer_id: str) -> list[dict]:
    return [json.loads(fields[b"e"]) for _, fields in client.xrange(f"{prefix}:events:{transfer_id}")]
