"""``adas-registry``: the registry for people (list, show, history, approve, promote, rollback, verify,
prune, keys).

The registry URL comes from ``--url``, else ``ADAS_REGISTRY_URL``, else the local SQLite
database under ``ADAS_HOME``; artifacts come from the environment's artifact store (``ADAS_ENV``).
Exit status: 0 done, 1 refused / rolled back / verification failed / registry error, 2 usage.

Dagster-free: the registry settings come from :mod:`adas.registry.settings`, the artifact store
from :class:`adas.storage.StoreSettings`; promote and rollback run the same use-case as the
``production_alias`` asset. The canary of ``promote`` replays the dataset the entry was evaluated
on, every file read against a hash pinned through the entry (the registry database is trusted,
the store's sidecars are not).
"""

import argparse
import dataclasses
import functools
import json
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adas.catalog import load_catalog
from adas.packaging.keys import init_local_keys, rotate_local_keys
from adas.packaging.local_oci_registry import LocalRegistryError
from adas.packaging.oci_client import OciError
from adas.packaging.oci_settings import OciRegistrySettings
from adas.packaging.signing import SIGNING_KEY_ENV, SignatureError
from adas.packaging.trust import TRUSTED_KEYS_ENV, load_trust_file, now_utc, trust_file_path
from adas.registry.aliases import entry_versions
from adas.registry.approvals import approve_entries, entries_of_version
from adas.registry.deploy import verify_in_registry
from adas.registry.governance import verify_artifacts
from adas.registry.models import ALIASES, ROLES, Entry, RegistryError
from adas.registry.production import AliasMoveRequest, move_production_alias
from adas.registry.promotion import PromotionResult
from adas.registry.replay import Traffic, evaluated_dataset, replay_traffic
from adas.registry.retention import prune_intermediates, prune_oci_manifests
from adas.registry.settings import URL_ENV, RegistrySettings
from adas.registry.store import RegistryStore
from adas.settings import AdasHome
from adas.storage import ArtifactError, ArtifactStore, StoreSettings


def _settings(args: argparse.Namespace) -> RegistrySettings:
    """This environment's registry settings (``ADAS_ENV``), the URL from ``--url``, else
    ``ADAS_REGISTRY_URL``, else the environment's default."""
    settings = RegistrySettings.from_env()
    url = args.url or os.environ.get(URL_ENV) or settings.url
    return dataclasses.replace(settings, url=url)


def _registry(args: argparse.Namespace) -> RegistryStore:
    return _settings(args).store()


def _artifact_store() -> ArtifactStore:
    return StoreSettings.from_env().build()


def _entry(reg: RegistryStore, args: argparse.Namespace) -> Entry:
    if getattr(args, "entry", None):
        return reg.get_entry(int(args.entry))
    if not (args.version and args.target):
        raise RegistryError("name the entry: --entry ID, or --version and --target")
    if args.model:
        return reg.find_entry(args.model, args.version, args.target)
    matches = reg.entries(version=args.version, target=args.target)
    if len(matches) != 1:
        raise RegistryError(
            f"{len(matches)} entries for {args.version} on {args.target}"
            + ("; add --model" if matches else "")
        )
    return matches[0]


def _print_table(rows: list[dict[str, Any]], columns: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) if rows else len(c) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    print("  ".join("-" * widths[c] for c in columns))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns))


def _aliases_of(reg: RegistryStore, entry: Entry) -> list[str]:
    return [a for a, e in reg.aliases(entry.target).items() if e is not None and e.id == entry.id]


# --------------------------------------------------------------------------- commands


def cmd_list(args: argparse.Namespace) -> int:
    reg = _registry(args)
    entries = reg.entries(model_name=args.model, target=args.target)
    rows = [
        {
            "id": e.id,
            "model": e.body.model_name,
            "version": e.version,
            "target": e.target,
            "aliases": ",".join(_aliases_of(reg, e)) or "-",
            "eval": e.body.evaluation.status if e.body.evaluation else "-",
            "sim": e.body.simulation.status if e.body.simulation else "-",
            "created": e.created_at.strftime("%Y-%m-%d %H:%M"),
            "by": e.created_by,
        }
        for e in entries
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    elif rows:
        _print_table(rows, list(rows[0]))
    else:
        print("no entries")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    reg = _registry(args)
    entry = _entry(reg, args)
    approvals = reg.approvals(entry.id)
    if args.json:
        print(
            json.dumps(
                {
                    **json.loads(entry.model_dump_json()),
                    "aliases": _aliases_of(reg, entry),
                    "approvals": {
                        r: {"actor": e.actor, "at": e.at.isoformat(), "reason": e.reason}
                        for r, e in approvals.items()
                    },
                },
                indent=2,
            )
        )
        return 0
    if args.card:
        print(entry.model_card)
        return 0
    b, p = entry.body, entry.body.pointers
    print(f"entry #{entry.id}: {entry.ref}")
    print(f"  digest      {entry.digest}")
    print(f"  registered  {entry.created_at:%Y-%m-%d %H:%M:%S} UTC by {entry.created_by}")
    print(f"  aliases     {', '.join(_aliases_of(reg, entry)) or '-'}")
    print(f"  pack        {p.pack_uri} ({len(p.artifacts)} files pinned)")
    print(f"  container   {p.container_tag or '-'}    W&B {p.wandb_artifact or '-'}")
    print(f"  lineage     run {p.training_run_id}, dataset {p.dataset_tag}, git {p.git_sha}")
    ap = b.performance.AP
    print(
        f"  AP          {f'{100 * ap:.1f}' if ap is not None else 'n/a'}   latency budget p95 {b.latency_budget_ms}"
    )
    for v in (b.evaluation, b.simulation):
        if v:
            print(
                f"  {v.kind:<11} {v.status}: {v.rationale.strip().splitlines()[0] if v.rationale.strip() else ''}"
            )
            for quote in v.amber:  # what an approval must quote to accept the amber verdict
                print(f"    undecided   {quote}")
    for role in ROLES:
        e = approvals.get(role)
        print(
            f"  {role:<11} "
            + (f"approved by {e.actor} at {e.at:%Y-%m-%d %H:%M} UTC: {e.reason}" if e else "not approved")
        )
    for w in reg.waivers(entry.id):
        print(f"  waiver      by {w.actor}: {w.payload.get('justification')}")
    for a in reg.amber_acceptances(entry.id):
        print(
            f"  amber       accepted by {a.actor} ({a.payload.get('role')}), quoting {a.payload.get('quote')!r}"
        )
    return 0


def _parse_at(text: str) -> datetime:
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def cmd_history(args: argparse.Namespace) -> int:
    reg = _registry(args)
    at = _parse_at(args.at) if args.at else None
    h = reg.history(args.target, at=at, alias=args.alias)
    versions = entry_versions(reg, args.target)
    rows = [
        {
            "at": c.at.isoformat(timespec="microseconds"),
            "event": c.id,
            "from": versions.get(c.from_entry_id or -1, "-"),
            "to": versions.get(c.to_entry_id or -1, "-"),
            "actor": c.actor,
            "reason": c.reason[:80],
        }
        for c in h.changes
    ]
    if args.json:
        print(
            json.dumps(
                {
                    "target": args.target,
                    "alias": args.alias,
                    "at": args.at,
                    "version": h.version,
                    "changes": rows,
                },
                indent=2,
            )
        )
        return 0
    when = f"at {at.isoformat()}" if at else "now"
    print(f"{args.alias} on {args.target} {when}: {h.version or 'none'}")
    if rows:
        _print_table(rows, list(rows[0]))
    return 0


def cmd_approve(args: argparse.Namespace) -> int:
    reg = _registry(args)
    if args.entry:
        entries = [reg.get_entry(int(args.entry))]
    elif args.version:
        entries = entries_of_version(reg, args.version, model_name=args.model, target=args.target)
    else:
        raise RegistryError("name what to approve: --entry ID, or --version (and --target, default all)")
    decision = "rejected" if args.reject else "approved"
    approvals = approve_entries(
        reg,
        entries,
        role=args.role,
        actor=args.actor,
        reason=args.reason,
        decision=decision,
        waive_vulnerabilities=args.waive_vulnerabilities or "",
        accept_amber=args.accept_amber or "",
    )
    for a in approvals:
        print(f"{a.entry.ref}: {args.role} {decision} by {args.actor} (event #{a.event.id})")
        if a.waiver is not None:
            print(f"{a.entry.ref}: vulnerability gate waived (event #{a.waiver.id})")
        if a.amber is not None:
            print(
                f"{a.entry.ref}: amber verdicts accepted, quoting {a.amber.payload['quote']!r} (event #{a.amber.id})"
            )
    return 0


def _traffic(store: ArtifactStore, entry: Entry, max_frames: int) -> Traffic:
    """Replay frames from the golden dataset ``entry`` was evaluated on, pinned through the entry
    (the registry database is trusted; the store's sidecars are not)."""
    return replay_traffic(evaluated_dataset(store, entry), max_frames)


def _print_result(result: PromotionResult, as_json: bool, success: tuple[str, ...]) -> int:
    if as_json:
        print(result.model_dump_json(indent=2))
    else:
        print(f"{result.status.upper()}: {result.message}")
        for warning in result.warnings:
            print(f"WARNING: {warning}")
        if result.rollout is not None:
            print(result.rollout.to_markdown())
        for name, uri in {**result.documents, **result.hooks}.items():
            if isinstance(uri, str) and "://" in uri:
                print(f"  {name}: {uri}")
    return 0 if result.status in success else 1


def _move(args: argparse.Namespace, request: AliasMoveRequest, entry: Entry | None = None) -> PromotionResult:
    store = _artifact_store()
    settings = _settings(args).promotion(store, load_catalog(), OciRegistrySettings.from_env())
    max_frames = settings.policy.rollout.local.max_frames
    # Only a promotion runs a canary (and has an entry to take its traffic from).
    traffic = None if entry is None else functools.partial(_traffic, store, entry, max_frames)
    move = move_production_alias(settings, request, traffic=traffic, entry=entry)
    return move.result


def cmd_promote(args: argparse.Namespace) -> int:
    entry = _entry(_registry(args), args)
    request = AliasMoveRequest(
        action="promote",
        target=entry.target,
        actor=args.actor,
        reason=args.reason,
        idempotency_key=args.key or "",
        strategy=args.strategy,
    )
    return _print_result(_move(args, request, entry), args.json, ("promoted",))


def cmd_rollback(args: argparse.Namespace) -> int:
    request = AliasMoveRequest(
        action="rollback",
        target=args.target,
        actor=args.actor,
        reason=args.reason,
        idempotency_key=args.key or "",
    )
    return _print_result(_move(args, request), args.json, ("rolled_back", "aborted"))


def cmd_verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    store = _artifact_store()
    entry = _entry(settings.store(), args)
    trusted = Path(args.trusted_keys) if args.trusted_keys else settings.trusted_keys_path()
    with tempfile.TemporaryDirectory(prefix="verify-") as tmp:
        v = verify_artifacts(store, entry.body, trusted, Path(tmp))
    ok = v.ok and (entry.body.adopted or bool(v.signed))
    if not args.json:
        print(f"{entry.ref}: {len(v.hashed)}/{v.files} files re-hashed, {len(v.signed)} signatures verified"
              + (f" with trusted key {v.key_id}" if v.key_id and not v.signature_problems else ""))  # fmt: skip
        for p in v.hash_problems + v.signature_problems:
            print(f"  FAIL {p}")
        if entry.body.adopted:
            print("  note: adopted baseline, no signatures to verify")
    with tempfile.TemporaryDirectory(prefix="verify-oci-") as tmp:
        oci = verify_in_registry(settings.store(), entry, OciRegistrySettings.from_env(), trusted, Path(tmp))
    ok = ok and (oci is None or oci.ok)
    if args.json:
        print(json.dumps({"entry": entry.id, "ok": ok, "files": v.files, "hashed": len(v.hashed), "signed": len(v.signed),
                          "key_id": v.key_id, "hash_problems": v.hash_problems, "signature_problems": v.signature_problems,
                          "oci": None if oci is None else dataclasses.asdict(oci)}, indent=2))  # fmt: skip
        return 0 if ok else 1
    if oci is None:
        print("  OCI: nothing published for this entry (adopted, or registered before publication)")
    elif oci.ok:
        attested = " and SBOM attestation (.att)" if oci.attested else ""
        print(f"  OCI: {oci.reference}: manifest digest, {oci.layers} layers, the signature (.sig){attested} "
              f"and the signed pack verified with trusted key {oci.key_id}")  # fmt: skip
    for p in oci.problems if oci else []:
        print(f"  FAIL OCI {p}")
    for w in oci.warnings if oci else []:
        print(f"  WARNING {w}")
    print("OK" if ok else "VERIFICATION FAILED")
    return 0 if ok else 1


def cmd_prune(args: argparse.Namespace) -> int:
    """Retention on demand: the store's heavy intermediates and the OCI registry's unpinned pack
    manifests, both under ``config/registry.yaml``'s ``retention`` (``--dry-run`` lists only)."""
    settings = _settings(args)
    reg, policy = settings.store(), settings.policy().retention
    out: dict[str, Any] = {"dry_run": args.dry_run}
    if args.scope in ("all", "store"):
        pruned = prune_intermediates(_artifact_store(), reg, policy, dry_run=args.dry_run)
        out["store"] = pruned.model_dump()
        if not args.json:
            print(pruned.summary())
    if args.scope in ("all", "oci"):
        oci = OciRegistrySettings.from_env()
        report = prune_oci_manifests(oci.client(), reg, policy, namespace=oci.namespace, dry_run=args.dry_run)
        out["oci"] = dataclasses.asdict(report) | {"bytes_deleted": report.bytes_deleted}
        if not args.json:
            print(report.summary())
            for line in report.lines():
                print(f"  {line}")
            if report.deleted and not args.dry_run and not oci.url:
                print("  blobs are freed by: python -m adas.packaging.local_oci_registry gc")
    if args.json:
        print(json.dumps(out, indent=2, default=str))
    return 0


def _local_keys() -> tuple[Path, Path]:
    """The local key directory and trust file; production keys are never made by this tool."""
    if os.environ.get("ADAS_ENV", "local") != "local" or os.environ.get(SIGNING_KEY_ENV):
        raise RegistryError(
            "keys init/rotate manage the local key only: production keys live in the secret store "
            f"({SIGNING_KEY_ENV}) and enter the reviewed trust file ({TRUSTED_KEYS_ENV}) by a change "
            "request (README: Signing keys and rotation)"
        )
    return AdasHome.from_env().keys, trust_file_path()


def cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        change = init_local_keys(*_local_keys())
    except SignatureError as exc:
        raise RegistryError(str(exc)) from exc
    print(change.summary())
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    try:
        change = rotate_local_keys(*_local_keys())
    except SignatureError as exc:
        raise RegistryError(str(exc)) from exc
    print(change.summary())
    return 0


def cmd_keys_list(args: argparse.Namespace) -> int:
    trust = load_trust_file(Path(_settings(args).trusted_keys or trust_file_path()))
    now = now_utc()
    rows = [
        {
            "key_id": k.key_id,
            "not_before": k.not_before.isoformat(timespec="seconds"),
            "not_after": k.not_after.isoformat(timespec="seconds") if k.not_after else "-",
            "now": k.state(now),
            "comment": k.comment,
        }
        for k in trust.root.keys
    ]
    if args.json:
        print(json.dumps({"trust_file": str(trust.path), "keys": rows}, indent=2))
        return 0
    print(f"trust file: {trust.path}")
    if rows:
        _print_table(rows, list(rows[0]))
    else:
        print("no trusted keys: nothing can pass verification")
    return 0


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adas-registry", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--url", help="registry database URL (default: ADAS_REGISTRY_URL or $ADAS_HOME/registry.db)"
    )
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    def entry_args(p: argparse.ArgumentParser, target_default: str | None = None) -> None:
        p.add_argument("--entry", help="entry id")
        p.add_argument("--version", help="semantic version")
        p.add_argument("--target", default=target_default, help="device/precision, e.g. x86-cpu/fp32")
        p.add_argument("--model", help="model name (when several models share a version)")

    def who(p: argparse.ArgumentParser) -> None:
        p.add_argument("--actor", required=True, help="who (recorded)")
        p.add_argument("--reason", required=True, help="why (recorded)")

    p = sub.add_parser("list", help="registered entries and their aliases")
    p.add_argument("--target")
    p.add_argument("--model")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="one entry: pointers, verdicts, approvals (--card: its model card)")
    entry_args(p)
    p.add_argument("--card", action="store_true", help="print the model card")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("history", help="alias moves of a target; --at: which version held it then")
    p.add_argument("--target", required=True)
    p.add_argument("--alias", default="production", choices=ALIASES)
    p.add_argument("--at", help="ISO date/time (UTC unless an offset is given), e.g. 2025-03-10T12:00")
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("approve", help="record an approval (technical, safety, security, product)")
    entry_args(p, target_default="all")
    p.add_argument("--role", required=True, choices=ROLES)
    who(p)
    p.add_argument("--reject", action="store_true", help="record a rejection instead")
    p.add_argument(
        "--waive-vulnerabilities", metavar="JUSTIFICATION", help="security: waive the vulnerability gate"
    )
    p.add_argument(
        "--accept-amber",
        metavar="QUOTE",
        help="accept amber gate verdicts: quote every undecided interval as `adas-registry show` prints it",
    )
    p.set_defaults(func=cmd_approve)

    p = sub.add_parser("promote", help="governance, real local canary, finalize, hooks")
    entry_args(p)
    who(p)
    p.add_argument("--key", help="idempotency key (default: promote:<target>:<version>[:attempt-N])")
    p.add_argument("--strategy", choices=["canary", "shadow", "ab"])
    p.set_defaults(func=cmd_promote)

    p = sub.add_parser(
        "rollback", help="production back to the rollback alias (or abort an in-flight promotion)"
    )
    p.add_argument("--target", required=True)
    who(p)
    p.add_argument("--key", help="idempotency key (default: rollback:<target>:<current version>)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser(
        "verify",
        help="re-hash an entry's artifacts, verify its signed pack against the trusted keys, and pull its "
        "pinned OCI digest: manifest, every layer and the attached signature",
    )
    entry_args(p)
    p.add_argument(
        "--trusted-keys",
        help="trust file (default: ADAS_TRUSTED_KEYS, else $ADAS_HOME/keys/trusted_keys.yaml)",
    )
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser(
        "prune",
        help="retention: delete heavy intermediates of old versions from the store and unpinned pack "
        "manifests (with their .sig/.sbom) from the OCI registry; never what an entry pins",
    )
    p.add_argument("--dry-run", action="store_true", help="list what would go (digest, tag, size)")
    p.add_argument("--scope", choices=["all", "store", "oci"], default="all")
    p.set_defaults(func=cmd_prune)

    keys = sub.add_parser("keys", help="the local signing key and the trust file (init, rotate, list)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("init", help="create the local signing key if missing and enrol it (idempotent)")
    p.set_defaults(func=cmd_keys_init)
    p = keys_sub.add_parser(
        "rotate", help="new local signing key enrolled from now; the old key's window closes now"
    )
    p.set_defaults(func=cmd_keys_rotate)
    p = keys_sub.add_parser("list", help="the trusted keys with their validity windows")
    p.set_defaults(func=cmd_keys_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (RegistryError, ArtifactError, OciError, LocalRegistryError, ValueError, LookupError) as exc:
        print(f"adas-registry: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
