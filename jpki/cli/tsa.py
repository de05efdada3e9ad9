"""The test time-stamping authority: ``jpki tsa init|serve|show``."""

from __future__ import annotations

from pathlib import Path

import click

from ._common import Ctx, pass_ctx

_WILDCARDS = ("0.0.0.0", "::", "")


@click.group()
def tsa() -> None:
    """The test time-stamping authority (RFC 3161), certified by the test CA: init, serve, show.

    Its certificate comes from the test CA's signing root (critical EKU timeStamping, OCSP and
    CRL at the CA's base URL); tokens carry the policy 2.25.127420171240973645412316758883384416945.1.1
    and serial numbers kept in HOME/tsa/serials.db. See docs/tsa.md.

    \b
    Examples:
      jpki tsa serve                          # made on first use, at a port kept in the home
      jpki tsa serve --workers 2
      jpki tsa init --port 8490 --key-type ec # choose before the first serve
      jpki tsa show                           # URL, certificate, policy, last serial
      openssl ts -query -data FILE -sha256 -cert -out q.tsq
      curl -s -H 'Content-Type: application/timestamp-query' --data-binary @q.tsq URL -o r.tsr
      openssl ts -verify -in r.tsr -data FILE -CAfile ~/.jpki/ca/sign_ca.pem
    """


def _url(host: str, port: int | None) -> str | None:
    """The URL a new TSA is given when a port was chosen (loopback when listening on all)."""
    if port is None:
        return None
    from ..serving import http_url

    return http_url("127.0.0.1" if host in _WILDCARDS else host, port)


@tsa.command("init")
@click.option("--host", default="127.0.0.1", show_default=True, help="the host of the URL clients use")
@click.option("--port", type=click.IntRange(1, 65535), help="its port [default: one free now]")
@click.option("--key-type", type=click.Choice(["rsa", "ec"]), default="rsa", show_default=True,
              help="the TSA's key: rsa (RSA-2048, like JPKI) or ec (ECDSA P-256: signs faster)")
@pass_ctx
def tsa_init(obj: Ctx, host: str, port: int | None, key_type: str) -> None:
    """Make the TSA in HOME/tsa: a key, a certificate from the test CA, its URL."""
    from ..pki.responder import check_key_type
    from ..tsa.credentials import create_tsa

    with obj.jhome.open_ca() as ca:
        creds = create_tsa(obj.home, ca=ca, key_type=check_key_type(key_type), url=_url(host, port))
    _show(obj, creds.directory, made=True)


@tsa.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="address to listen on")
@click.option("--port", type=click.IntRange(1, 65535),
              help="port to listen on [default: the port of the TSA's URL, kept in the home]")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="processes answering on the port (they share the serial counter)")
@click.option("--rate-limit", type=click.FloatRange(0), default=20.0, show_default=True,
              help="tokens per second per client address, per worker (0: no limit)")
@click.option("--rate-burst", type=click.IntRange(1), default=100, show_default=True,
              help="requests a client may send at once before --rate-limit applies")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="warning", show_default=True)
@pass_ctx
def tsa_serve(obj: Ctx, host: str, port: int | None, workers: int, rate_limit: float, rate_burst: int,
              log_level: str) -> None:
    """Serve RFC 3161 over HTTP (POST a TimeStampReq to the root; application/timestamp-query).

    The TSA is made on the first serve (key, certificate, URL), its certificate renewed at start
    when it nears its end."""
    import urllib.parse

    from ..serving import check_port, http_url
    from ..tsa.app import TsaSettings, serve
    from ..tsa.credentials import CONFIG_FILE, ensure_tsa, tsa_dir

    new = not (tsa_dir(obj.home) / CONFIG_FILE).exists()
    if new and port is not None:
        check_port(host, port)  # a busy port fails before anything is made
    settings = TsaSettings(Path(obj.home).expanduser(), rate_limit=rate_limit, rate_burst=rate_burst)
    with obj.jhome.open_ca() as ca:
        creds, made = ensure_tsa(obj.home, ca=ca, url=_url(host, port) if new else None)
    if made:
        obj.note(f"{'made the TSA' if new else 'renewed the TSA certificate'} in {creds.directory} "
                 f"(certificate until {creds.cert.not_valid_after_utc.isoformat()})")
    if port is None:
        port = urllib.parse.urlsplit(creds.url).port or 80
    listening = http_url(host, port) + "/"
    where = "" if listening.rstrip("/") == creds.url else f" (its URL in the home is {creds.url})"
    # serve() checks the port, builds the app, then says "serving" (on stderr).
    serve(settings, host, port, workers=workers, log_level=log_level, clock=obj.clock if workers == 1 else None,
          on_ready=lambda: obj.note(f"serving the test TSA on {listening}{where}, {workers} worker"
                                    f"{'s' if workers > 1 else ''}; certificate {creds.cert_path}"))


@tsa.command("show")
@pass_ctx
def tsa_show(obj: Ctx) -> None:
    """Where the TSA answers, its certificate, policy and the last serial it issued."""
    from ..tsa.credentials import tsa_dir

    _show(obj, tsa_dir(obj.home), made=False)


def _show(obj: Ctx, directory: Path, *, made: bool) -> None:
    from ..tsa.authority import load_credentials
    from ..tsa.protocol import TSA_POLICY
    from ..tsa.serials import SerialCounter

    creds = load_credentials(obj.home)
    last = 0
    if creds.serials_path.exists():
        counter = SerialCounter(creds.serials_path)
        try:
            last = counter.last()
        finally:
            counter.close()
    cert = creds.cert
    certificate = {"file": str(creds.cert_path), "subject": cert.subject.rfc4514_string(),
                   "serial": format(cert.serial_number, "X"), "not_before": cert.not_valid_before_utc.isoformat(),
                   "not_after": cert.not_valid_after_utc.isoformat()}
    data = {"directory": str(directory), "url": creds.url + "/", "policy": TSA_POLICY, "key_type": creds.key_type,
            "certificate": certificate,
            "issuer_file": str(Path(obj.home).expanduser() / "ca" / "sign_ca.pem"), "last_serial": last}
    obj.emit(data, lambda: "\n".join([
        f"{'made the TSA in' if made else 'TSA in'} {data['directory']}",
        f"  URL          {data['url']}  (jpki tsa serve)",
        f"  policy       {TSA_POLICY}",
        f"  certificate  {certificate['file']} (serial {certificate['serial']}, "
        f"until {certificate['not_after']}, {creds.key_type} key)",
        f"  issuer       {data['issuer_file']}",
        f"  last serial  {last}"]))


__all__ = ["tsa"]
