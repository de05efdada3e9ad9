"""The agent's pages, in Japanese and English (``Accept-Language``; Japanese by default).

Plain HTML with inline style and no script (the app's Content-Security-Policy allows none).
Every text a provider or a client supplies (the client's name, the issuer, a transaction text)
is escaped. A bar at the top says that the page is the agent's on this computer, not a web
site's: the PIN is typed here and goes to the card only.

States a card holder meets: the request (who asks, through which provider, what they will
receive or what will be signed, which PIN, tries left, with a notice when the card is missing,
the PIN was wrong or had the wrong form), "trust this provider?" (first use), refused (the
provider's reason in plain words and what to do, with the way back to the site), and messages
(already finished, expired, provider unreachable, a link that does not make sense, the agent's
own status page).
"""

from __future__ import annotations

import datetime as _dt
import html
from collections.abc import Sequence
from typing import Final

from jpki.agent.service import CardStatus, PendingRequest
from jpki.i18n import BASE_STYLE, LANGUAGES, choose_language, hash_rows

__all__ = ["choose_language", "message_page", "notice", "refused_page", "request_page", "status_page", "trust_page"]

_T: Final[dict[str, dict[str, str]]] = {
    "ja": {
        "bar": "jpki エージェント ― このコンピューター上のプログラムの画面です（{origin}）",
        "title": "マイナンバーカードを使う",
        "asks": "{client} が、{issuer} を通じて、マイナンバーカードによる認証を求めています。",
        "asks_sign": "{client} が、{issuer} を通じて、マイナンバーカードによる電子署名を求めています。",
        "asks_ekyc": "{client} が、{issuer} を通じて、マイナンバーカードによる本人確認を求めています。",
        "receives": "{client} に提供される情報：",
        "no_personal": "個人情報は提供されません（このサービス専用の識別子のみ）。",
        "sign_text": "署名する内容：",
        "sign_hash": "ハッシュ値（{algorithm}）：",
        "sign_receives": ("{client} には、署名と署名用電子証明書（氏名・住所・生年月日・性別が記載されています）"
                          "が提供されます。"),
        "pin_auth": "利用者証明用電子証明書の暗証番号（数字4桁）",
        "pin_sign": "署名用電子証明書の暗証番号（英数字6〜16文字）",
        "tries": "残り {n} 回まで入力できます。", "tries_one": "残り 1 回です。",
        "last_try": "次に間違えるとロックされます。市区町村の窓口での初期化が必要になります。",
        "submit": "カードで認証する",
        "submit_sign": "カードで署名する",
        "cancel": "キャンセル",
        "pin_stays": "ここで入力した暗証番号はカードだけに渡され、このコンピューターの外には送られません。",
        "needs": "必要なもの：{pin}",
        "valid_until": "この要求の有効期限：{when}",
        "test_cards": "この認証サーバーはテストカードモードで動いています（本番の利用者向けではありません）。",
        "name": "氏名", "address": "住所", "birthdate": "生年月日", "gender": "性別",
        "wrong_pin": "暗証番号が違います。", "wrong_pin_sign": "暗証番号が違います。",
        "pin_format": "暗証番号の形式が違います（{rule}）。カードには送っていないので、回数は減っていません。",
        "rule_auth": "数字4桁", "rule_sign": "英字と数字の6〜16文字",
        "no_reader": "カードリーダーが見つかりません。リーダーを接続してカードを置き、「もう一度」を押してください。",
        "no_card": "カードが読み取れません。カードをリーダーに置いて、「もう一度」を押してください。",
        "card_error": "カードを操作できませんでした。マイナンバーカードか確認して、もう一度お試しください。",
        "busy": "カードは別の操作に使われています。少し待ってからもう一度お試しください。",
        "provider_down": "認証サーバーに接続できませんでした。少し待ってからもう一度お試しください。",
        "again": "もう一度",
        "blocked": ("このカードの暗証番号はロックされています。お住まいの市区町村の窓口で初期化を受けてください。"
                    "「サイトに戻る」で、このことをサイトに伝えます。"),
        "trust_title": "この認証サーバーを信頼しますか？",
        "trust": ("あるサイトが、次の認証サーバーのためにこのコンピューターのマイナンバーカードを使おうとしています。"
                  "このエージェントはまだこのサーバーを使ったことがありません。"),
        "trust_ask": ("知っているサービスからの操作である場合だけ「信頼する」を押してください。"
                      "心当たりがなければ、このページを閉じてください。"),
        "trust_yes": "信頼して続ける",
        "refused_title": "認証できませんでした",
        "back": "サイトに戻る",
        "gone_title": "この要求は無効です",
        "gone": "この認証要求は有効期限が切れたか、すでに使われています。元のサイトから最初からやり直してください。",
        "decided_title": "この要求は処理済みです",
        "decided": "この認証要求はすでに処理されています。「続ける」でサイトに戻ります。",
        "continue": "続ける",
        "expired_page_title": "このページは使えません",
        "expired_page": ("このページの有効期限が切れたか、すでに送信されています。"
                         "認証サーバーの画面に戻り、「このコンピューターのカードを使う」からやり直してください。"),
        "bad_link_title": "このリンクは使えません",
        "bad_link": "リンクの内容が正しくありません（{reason}）。元のサイトからやり直してください。",
        "provider_title": "認証サーバーに問題があります",
        "provider": "認証サーバーから正しい応答がありませんでした（{reason}）。しばらくしてからやり直してください。",
        "challenge_title": "この要求には応じられません",
        "challenge": "この要求はカードで署名できません（{reason}）。元のサイトからやり直してください。",
        "status_title": "jpki エージェント",
        "status": "エージェントは動作しています。カード：{card}",
        "trusted": "信頼している認証サーバー：",
        "trusted_none": "まだありません。",
        "close": "このページは閉じてかまいません。",
    },
    "en": {
        "bar": "jpki agent — a program on this computer ({origin})",
        "title": "Use your My Number Card",
        "asks": "{client} asks you, through {issuer}, to authenticate with your My Number Card.",
        "asks_sign": "{client} asks you, through {issuer}, to sign with your My Number Card.",
        "asks_ekyc": "{client} asks you, through {issuer}, to prove who you are with your My Number Card.",
        "receives": "{client} will receive:",
        "no_personal": "No personal information: only an identifier for this service.",
        "sign_text": "What you sign:",
        "sign_hash": "Hash ({algorithm}):",
        "sign_receives": ("{client} will receive the signature and your signing certificate, which holds your "
                          "name, address, date of birth and gender."),
        "pin_auth": "User-authentication PIN (4 digits)",
        "pin_sign": "Signature password (6-16 letters and digits)",
        "tries": "{n} tries left.", "tries_one": "1 try left.",
        "last_try": "One more wrong try blocks it; your municipal office would have to reset it.",
        "submit": "Authenticate with the card",
        "submit_sign": "Sign with the card",
        "cancel": "Cancel",
        "pin_stays": "What you type here goes to the card only; it never leaves this computer.",
        "needs": "You will need: {pin}",
        "valid_until": "This request is valid until {when}.",
        "test_cards": "This provider runs in test-card mode (not for real users).",
        "name": "Name", "address": "Address", "birthdate": "Date of birth", "gender": "Gender",
        "wrong_pin": "The PIN was wrong.", "wrong_pin_sign": "The password was wrong.",
        "pin_format": "That is not the form of this PIN ({rule}). Nothing was sent to the card: no try was used.",
        "rule_auth": "4 digits", "rule_sign": "6-16 letters and digits",
        "no_reader": "No card reader found. Connect the reader, put the card on it and press Try again.",
        "no_card": "The card cannot be read. Put the card on the reader and press Try again.",
        "card_error": "The card could not do it. Check that it is a My Number Card and try again.",
        "busy": "The card is busy with another request. Wait a moment and try again.",
        "provider_down": "The provider could not be reached. Wait a moment and try again.",
        "again": "Try again",
        "blocked": ("This card's PIN is blocked: your municipal office can reset it. "
                    "“Return to the site” tells the site so."),
        "trust_title": "Trust this provider?",
        "trust": ("A site wants to use the My Number Card on this computer for the provider below. "
                  "This agent has not used this provider before."),
        "trust_ask": ("Trust it only if you started this at a service you know. If not, close this page."),
        "trust_yes": "Trust and continue",
        "refused_title": "Authentication failed",
        "back": "Return to the site",
        "gone_title": "This request is no longer valid",
        "gone": "This request has expired or was already used. Start again from the site.",
        "decided_title": "This request is finished",
        "decided": "This request has been handled already. Continue to go back to the site.",
        "continue": "Continue",
        "expired_page_title": "This page cannot be used",
        "expired_page": ("This page has expired or was already sent. Go back to the provider's page and choose "
                         "“Use the card on this computer” again."),
        "bad_link_title": "This link cannot be used",
        "bad_link": "The link is not valid ({reason}). Start again from the site.",
        "provider_title": "The provider has a problem",
        "provider": "The provider did not answer as expected ({reason}). Try again later.",
        "challenge_title": "This request cannot be answered",
        "challenge": "The card will not sign this request ({reason}). Start again from the site.",
        "status_title": "jpki agent",
        "status": "The agent is running. Card: {card}",
        "trusted": "Trusted providers:",
        "trusted_none": "none yet.",
        "close": "You may close this page.",
    },
}

_REVOCATION_FAILED: Final = ("認証サーバーが証明書の失効確認をできませんでした。しばらくしてからやり直してください。",
                             "The provider could not check the certificate's revocation. Try again later.")
#: Why the provider refused, for the card holder, and what to do.
_REASONS: Final[dict[str, tuple[str, str]]] = {
    "revoked": ("このカードの電子証明書は失効しています（紛失の届出、更新、記載事項の変更など）。"
                "新しいカードをお持ちならそのカードで、そうでなければお住まいの市区町村の窓口にご相談ください。",
                "The card's certificate has been revoked (the card was reported lost, renewed, or its details "
                "changed). Use your current card, or ask your municipal office."),
    "expired-certificate": ("このカードの電子証明書は有効期限が切れています。市区町村の窓口で更新してください。",
                            "The card's certificate has expired. Renew it at your municipal office."),
    "certificate-not-yet-valid": ("このカードの電子証明書はまだ有効になっていません。しばらくしてからお試しください。",
                                  "The card's certificate is not valid yet. Try again later."),
    "pin-blocked": ("暗証番号がロックされました。お住まいの市区町村の窓口で暗証番号の初期化を受けてください。",
                    "The PIN is blocked. Your municipal office can reset it."),
    "wrong-pin": ("暗証番号が違います。", "The PIN was wrong."),
    "cancelled": ("認証をキャンセルしました。", "You cancelled."),
    "card-unavailable": ("カードを読み取れませんでした。", "The card could not be read."),
    "untrusted": ("このカードの電子証明書は、認証サーバーが信頼する発行元のものではありません。",
                  "The card's certificate is not from an issuer the provider trusts."),
    "revocation-unavailable": _REVOCATION_FAILED,
    "revocation-check-failed": _REVOCATION_FAILED,
    "expired": ("時間切れになりました。元のサイトからやり直してください。",
                "The request timed out. Start again from the site."),
    "replayed": ("この要求はすでに使われています。元のサイトからやり直してください。",
                 "This request was already used. Start again from the site."),
    "wrong-key-kind": ("カードの別の証明書で署名されました。もう一度お試しください。",
                       "The card's other certificate was used. Try again."),
    "unknown-client": ("要求したサービスの登録が取り消されました。", "The service that asked is no longer registered."),
}
_OTHER: Final = ("認証サーバーが認証を拒否しました（{reason}）。元のサイトからやり直してください。",
                 "The provider refused the authentication ({reason}). Start again from the site.")

_STYLE: Final = BASE_STYLE + """
body{margin:0;background:#f4f6f8}
.bar{background:#1d3557;color:#fff;font-size:.85rem;padding:.5rem 1rem}
main{max-width:38rem;margin:1.5rem auto;padding:1.2rem 1.5rem;background:#fff;border-radius:8px;
box-shadow:0 1px 4px rgba(0,0,0,.12)}
h1{font-size:1.4rem;margin-top:.2rem}
.who{font-size:1.05rem}
.issuer{font-family:ui-monospace,monospace;background:#eef1f4;padding:.1rem .3rem;border-radius:3px;
word-break:break-all}
.notice{padding:.7rem 1rem;border-radius:4px;margin:1rem 0;font-weight:600}
.error{background:#fdecea;color:#8a1c13;border-left:4px solid #c0392b}
.warn{background:#fff6e0;color:#6b4a00;border-left:4px solid #e0a800}
.info{background:#e8f1fb;color:#163e6b;border-left:4px solid #2b6cb0}
.signed{background:#f7f7f7;border:1px solid #ccc;padding:.6rem .8rem;white-space:pre-wrap;word-break:break-word}
.hash{font-family:ui-monospace,monospace;font-size:.85rem;word-break:break-all}
label{display:block;font-weight:600;margin-top:1rem}
input[type=password]{font-size:1.3rem;padding:.4rem .6rem;width:14rem;letter-spacing:.2rem;margin:.3rem 0;
border:1px solid #999;border-radius:4px}
.button{margin:.8rem .5rem 0 0}
form{margin:0}
"""


def notice(lang: str, key: str, level: str = "error", *, pin: str | None = None) -> tuple[str, str]:
    """A notice above the PIN form: (``error``/``warn``/``info``, the text of ``key``); for
    ``pin_format`` the rule of the ``pin`` in words."""
    t = _T[lang]
    if key == "pin_format":
        return level, t[key].format(rule=t.get(f"rule_{pin}", ""))
    return level, t.get(f"{key}_{pin}", t[key])


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def reason_text(reason: str | None, lang: str) -> str:
    """A refusal reason explained (see :data:`_REASONS`)."""
    index = LANGUAGES.index(lang)
    texts = _REASONS.get(reason or "")
    return texts[index] if texts is not None else _OTHER[index].format(reason=reason or "?")


def page(lang: str, origin: str, title: str, body: str) -> str:
    """A whole page: the agent's bar, the title and ``body`` (already HTML)."""
    t = _T[lang]
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_e(title)}</title><style>{_STYLE}</style></head><body>'
            f'<div class="bar">{_e(t["bar"].format(origin=origin))}</div>'
            f'<main><h1>{_e(title)}</h1>{body}</main></body></html>\n')


def _hidden(**fields: str) -> str:
    return "".join(f'<input type="hidden" name="{name}" value="{_e(value)}">' for name, value in fields.items())


def request_page(lang: str, origin: str, request: PendingRequest, *, token: str, card: CardStatus,
                 notice: tuple[str, str] | None = None) -> str:
    """The request and the PIN form. ``notice``: (class ``error``/``warn``/``info``, text)."""
    t = _T[lang]
    client = f"<strong>{_e(request.client_name)}</strong>"
    issuer = f'<span class="issuer">{_e(request.issuer)}</span>'
    signing = request.sign is not None
    asks = t["asks_sign" if signing else "asks_ekyc" if request.claims else "asks"].format(client=client, issuer=issuer)
    parts = [f'<p class="who" id="who">{asks}</p>']
    if request.test_cards:
        parts.append(f'<div class="notice warn">{_e(t["test_cards"])}</div>')
    if request.sign is not None:
        parts.append(f'<p>{_e(t["sign_text"])}</p>'
                     f'<div class="signed" id="sign-text">{_e(request.sign.display_text)}</div>')
        parts.append(f'<p>{_e(t["sign_hash"].format(algorithm=request.sign.hash_algorithm))}<br>'
                     f'<span class="hash" id="sign-hash">{hash_rows(request.sign.hash)}</span></p>')
        parts.append(f'<p class="note" id="sign-receives">{t["sign_receives"].format(client=client)}</p>')
    elif request.claims:
        items = "".join(f"<li>{_e(t.get(c, c))}</li>" for c in request.claims)
        parts.append(f'<p>{t["receives"].format(client=client)}</p><ul id="claims">{items}</ul>')
    else:
        parts.append(f'<p id="claims">{_e(t["no_personal"])}</p>')
    if notice is not None:
        parts.append(f'<div class="notice {notice[0]}" role="alert" id="notice">{_e(notice[1])}</div>')
    blocked = card.ok and card.tries_left == 0
    if notice is None and (blocked or not card.ok):
        key = "blocked" if blocked else \
            {"no-reader": "no_reader", "no-card": "no_card"}.get(card.problem or "", "card_error")
        parts.append(f'<div class="notice error" role="alert" id="notice">{_e(t[key])}</div>')
    fields = _hidden(token=token, issuer=request.issuer, pending=request.id)
    pin_label = t["pin_auth" if request.pin == "auth" else "pin_sign"]
    size = 4 if request.pin == "auth" else 16
    mode = ' inputmode="numeric"' if request.pin == "auth" else ' autocapitalize="characters"'
    tries = ""
    if card.tries_left is not None:
        said = t["tries_one"] if card.tries_left == 1 else t["tries"].format(n=card.tries_left)
        tries = f'<div class="note" id="tries">{_e(said)}</div>'
        if card.tries_left == 1:
            tries += f'<div class="notice warn">{_e(t["last_try"])}</div>'
    if blocked:
        form = (f'<button class="button" type="submit" name="do" value="blocked" id="back">{_e(t["back"])}'
                '</button>')
    elif card.ok:
        form = (f'<label for="pin">{_e(pin_label)}</label>'
                f'<input type="password" id="pin" name="pin" autocomplete="off" autofocus maxlength="{size}" '
                f'spellcheck="false"{mode}>{tries}'
                f'<button class="button" type="submit" name="do" value="answer" id="submit">'
                f'{_e(t["submit_sign" if signing else "submit"])}</button>')
    else:
        form = (f'<p class="note">{_e(t["needs"].format(pin=pin_label))}</p>'
                f'<button class="button" type="submit" name="do" value="retry" id="retry">'
                f'{_e(t["again"])}</button>')
    if not blocked:
        form += (f'<button class="button secondary" type="submit" name="do" value="cancel" id="cancel">'
                 f'{_e(t["cancel"])}</button>')
    parts.append(f'<form method="post" action="/authorize" id="card-form">{fields}{form}</form>')
    parts.append(f'<p class="note">{_e(t["pin_stays"])}</p>')
    if request.expires_at is not None:
        when = request.expires_at.astimezone(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        parts.append(f'<p class="note">{_e(t["valid_until"].format(when=when))}</p>')
    return page(lang, origin, t["title"], "".join(parts))


def trust_page(lang: str, origin: str, *, issuer: str, pending_id: str, token: str) -> str:
    """First use of a provider: "trust this provider?"."""
    t = _T[lang]
    body = (f'<p>{_e(t["trust"])}</p><p class="who"><span class="issuer" id="issuer">{_e(issuer)}</span></p>'
            f'<div class="notice warn">{_e(t["trust_ask"])}</div>'
            f'<form method="post" action="/trust" id="trust-form">'
            f'{_hidden(token=token, issuer=issuer, pending=pending_id)}'
            f'<button class="button" type="submit" id="trust">{_e(t["trust_yes"])}</button></form>')
    return page(lang, origin, t["trust_title"], body)


def refused_page(lang: str, origin: str, *, reason: str | None, resume: str) -> str:
    """The provider refused (or the PIN blocked): why, what to do, and the way back to the site."""
    t = _T[lang]
    body = (f'<div class="notice error" role="alert" id="reason">{_e(reason_text(reason, lang))}</div>'
            f'<p><a class="button" id="back" href="{_e(resume)}">{_e(t["back"])}</a></p>')
    return page(lang, origin, t["refused_title"], body)


def message_page(lang: str, origin: str, kind: str, *, reason: str | None = None, link: str | None = None,
                 link_text: str = "continue") -> str:
    """``gone``, ``decided``, ``expired_page``, ``bad_link``, ``provider``, ``challenge``."""
    t = _T[lang]
    text = t[kind].format(reason=reason or "?") if "{reason}" in t[kind] else t[kind]
    body = f'<p id="message">{_e(text)}</p>'
    if link is not None:
        body += f'<p><a class="button" id="next" href="{_e(link)}">{_e(t[link_text])}</a></p>'
    else:
        body += f'<p class="note">{_e(t["close"])}</p>'
    return page(lang, origin, t[f"{kind}_title"], body)


def status_page(lang: str, origin: str, *, card: str, trusted: Sequence[str]) -> str:
    """``GET /``: the agent runs, with which card, trusting which providers."""
    t = _T[lang]
    items = "".join(f'<li><span class="issuer">{_e(i)}</span></li>' for i in trusted)
    body = (f'<p>{_e(t["status"].format(card=card))}</p><p>{_e(t["trusted"])}</p>'
            + (f"<ul>{items}</ul>" if items else f'<p class="note">{_e(t["trusted_none"])}</p>'))
    return page(lang, origin, t["status_title"], body)
