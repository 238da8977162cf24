"""The command line: ``geomail serve|check|passwd|queue|dns|dkim|sendmail`` and ``--version``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from geomail import __version__, log
from geomail.config import Config, check_files, load_config
from geomail.errors import ConfigError

DEFAULT_CONFIG = "/etc/geomail/geomail.yaml"


def _load(path: str) -> Config:
    config = load_config(path)
    problems = check_files(config)
    if problems:
        raise ConfigError(problems)
    return config


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the server in the foreground until SIGTERM/SIGINT."""
    from geomail.app import App

    config = _load(args.config)
    log.setup(config.log.level if not args.debug else "debug", config.log.format)
    App(config).run()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config: print every problem (exit 1) or a summary (exit 0)."""
    config = _load(args.config)
    print(f"{args.config}: OK")
    print(f"  hostname   {config.hostname}")
    print(f"  domains    {', '.join(config.domains)}")
    print(f"  users      {len(config.users)}, aliases {len(config.aliases)}")
    print(f"  store      {config.store.format} at {config.store.path}")
    print(f"  data_dir   {config.data_dir}")
    for listener in config.listeners:
        print(f"  listen     {listener.kind:<12} {listener.address}")
    print(f"  tls        {'yes' if config.tls else 'no (no STARTTLS, no 465/995)'}"
          f"{' (ACME)' if config.tls and config.tls.acme else ''}")
    if config.tls and config.tls.acme:
        from geomail.certs.check import acme_report

        lines, warnings = acme_report(config)
        for line in lines:
            print(f"  {line}")
        for warning in warnings:
            print(f"  warning    {warning}")
    relay = config.relay
    via = f"smarthost {relay.smarthost.host}:{relay.smarthost.port}" if relay.smarthost \
        else f"MX lookup, port {relay.mx_port}"
    print(f"  relay      {via}")
    if relay.dane is not None:
        from geomail.courier.dane import probe_validation

        servers = ", ".join(f"{host}:{port}" for host, port in relay.dane.nameservers)
        print(f"  dane       on, validating resolver {servers}")
        problem = probe_validation(relay.dane)
        if problem:
            print(f"  warning    {problem}")
    print(f"  dkim       {'selector ' + config.dkim.selector if config.dkim else 'off'}")
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    """Print the argon2id hash of a password read from the terminal or stdin."""
    from geomail.passwords import passwd_command

    return passwd_command()


def cmd_sendmail(args: argparse.Namespace) -> int:
    """sendmail(1): the message on stdin goes to the running server."""
    from geomail import sendmail

    return sendmail.main(args.sendmail_args)


def cmd_queue(args: argparse.Namespace) -> int:
    """Inspect and steer the outbound queue, through the running server when there is one."""
    from geomail.queue.control import ControlError, format_queue_list, queue_command

    config = load_config(args.config)
    if args.action in ("delete", "bounce") and not args.id:
        print(f"geomail queue {args.action}: give the item id (see 'geomail queue list')",
              file=sys.stderr)
        return 2
    try:
        answer = queue_command(config.data_dir, args.action, args.id)
    except ControlError as exc:
        print(f"geomail queue {args.action}: {exc}", file=sys.stderr)
        return 1
    if args.action == "list":
        print(format_queue_list(answer.get("items", [])), end="")
    elif args.action == "flush":
        print(f"{answer.get('count', 0)} item(s) will be retried now")
    else:
        print(f"{args.id}: {'deleted' if args.action == 'delete' else 'bounced'}")
    if answer.get("offline") and args.action != "list":
        print("(the server is not running: the queue files were changed directly)",
              file=sys.stderr)
    return 0


def cmd_dkim(args: argparse.Namespace) -> int:
    """``dkim keygen``: write the configured DKIM keys that do not exist yet."""
    from geomail import dkim

    config = load_config(args.config)
    if config.dkim is None:
        print("geomail dkim: the config has no 'dkim:' section; add for example\n"
              "  dkim: {selector: geomail, key: /var/lib/geomail/dkim/example.com.key}",
              file=sys.stderr)
        return 1
    for domain, path in sorted(config.dkim.keys.items()):
        name = f"{config.dkim.selector}._domainkey.{domain}."
        if os.path.exists(path) and not args.force:
            print(f"; {path} exists (--force makes a new one); its record:")
            value = dkim.dns_txt_record(path)
        else:
            value = dkim.keygen(path, bits=args.bits, overwrite=args.force)
            print(f"; wrote {path} ({args.bits}-bit RSA); publish:")
        print(f"{name} IN TXT " + " ".join(f'"{part}"' for part in dkim.split_txt(value)))
    return 0


def cmd_dns(args: argparse.Namespace) -> int:
    """Print the DNS records to publish; with --check, look each one up."""
    from geomail import dnsrecords
    from geomail.dnsresolver import make_resolver

    config = load_config(args.config)
    if not args.check:
        print(dnsrecords.format_zone(dnsrecords.records(config)), end="")
        return 0
    lookup = dnsrecords.resolver_lookup(make_resolver(config.relay))
    addresses = dnsrecords.public_addresses(config) or [
        a for kind in ("A", "AAAA") for a in lookup(config.hostname, kind)]
    results = dnsrecords.check(dnsrecords.records(config, addresses), lookup)
    print(dnsrecords.format_check(results), end="")
    return 0 if all(verdict == "ok" for _, verdict, _ in results) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="geomail", description="A small mail server.")
    parser.add_argument("--version", action="version", version=f"geomail {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Callable[[argparse.Namespace], int], help_text: str,
                config: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if config:
            p.add_argument("-c", "--config", default=DEFAULT_CONFIG,
                           help=f"configuration file (default {DEFAULT_CONFIG})")
        p.set_defaults(func=func)
        return p

    serve = command("serve", cmd_serve, "run the server in the foreground")
    serve.add_argument("--debug", action="store_true", help="log protocol transcripts")
    command("check", cmd_check, "validate the configuration file")
    command("passwd", cmd_passwd, "hash a password for users.<address>.password", config=False)
    queue = command("queue", cmd_queue, "list, flush, delete or bounce queued messages")
    queue.add_argument("action", choices=["list", "flush", "delete", "bounce"])
    queue.add_argument("id", nargs="?", help="queue item id (delete, bounce)")
    dkim = command("dkim", cmd_dkim, "make DKIM keys and print their DNS records")
    dkim.add_argument("action", choices=["keygen"])
    dkim.add_argument("--bits", type=int, default=2048, help="RSA key size (default 2048)")
    dkim.add_argument("--force", action="store_true", help="replace existing keys")
    dns_cmd = command("dns", cmd_dns, "print the DNS records to publish (MX, A, SPF, DKIM, "
                      "DMARC, PTR)")
    dns_cmd.add_argument("--check", action="store_true",
                         help="look each record up and say which are missing or wrong")
    mail = command("sendmail", cmd_sendmail, "sendmail(1): send the message on stdin "
                   "(-t, -f SENDER, -i, -c FILE, recipients)", config=False)
    mail.add_argument("sendmail_args", nargs=argparse.REMAINDER, help="sendmail options")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; config problems print one per line, exit 1."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if os.path.basename(sys.argv[0]) in ("sendmail", "mailq", "newaliases") or \
            (argv[:1] == ["sendmail"]):
        # Called as /usr/sbin/sendmail (a symlink), or `geomail sendmail`: sendmail's own
        # option syntax (-oi, -f addr), which argparse cannot take.
        from geomail import sendmail

        return sendmail.main(argv[1:] if argv[:1] == ["sendmail"] else argv)
    if argv[:1] == ["verify-worker"]:  # started by the server itself (checks/verify_pool.py)
        from geomail.checks.verify_pool import worker_main

        return worker_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"geomail: configuration error{'s' if len(exc.problems) > 1 else ''}:",
              file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
