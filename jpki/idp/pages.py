"""The provider's HTML pages, in Japanese and English (``ui_locales``, then ``Accept-Language``).

Pages are plain HTML with inline style and no script (the Content-Security-Policy of
:mod:`jpki.idp.app` allows none). Every text a client or a card supplies is escaped. No page
shows an account key, a certificate serial number, a code or a token; the only personal data
a page could show would come from the card, and none does.

States a person meets: the authorization page (who asks, what they will receive, which PIN,
"use the card on this computer"; for a sign transaction the text to sign and its hash),
waiting (the card has not answered yet), refused (why, in plain words, and what to do, with a
button back to the site), expired or already used, another browser, too many requests from one
network (429), and an error page for a request that cannot go back to the site (unknown
client, unregistered redirect URI). In test-card mode a red banner on every page says that
anyone can log in as any test card.
"""

from __future__ import annotations

import base64
import binascii
import html
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from jpki.i18n import BASE_STYLE, choose_language, hash_rows

__all__ = ["OUTCOMES", "choose_language", "page"]

#: Test-card outcomes, in the order the form offers them.
OUTCOMES: Final = ("success", "wrong_pin", "blocked_pin", "revoked", "expired", "cancel")

_T: Final[dict[str, dict[str, str]]] = {
    "ja": {
        "lang": "ja",
        "title": "マイナンバーカードでログイン",
        "banner": ("テストカードモード：本物の利用者向けではありません。"
                   "誰でも任意のテストカードとしてログインできます。"),
        "asks": "{client} がマイナンバーカードによる認証を求めています。",
        "receives": "{client} に提供される情報：",
        "no_personal": "個人情報は提供されません（このサービス専用の識別子のみ）。",
        "pin_auth": "利用者証明用電子証明書の暗証番号（数字4桁）を使います。",
        "pin_sign": "署名用電子証明書の暗証番号（英数字6〜16文字）を使います。",
        "pin_other": "カードの暗証番号を使います。",
        "use_card": "このコンピューターのカードを使う",
        "agent_note": ("カードリーダーとローカルエージェント（jpki agent、{agent}）が必要です。"
                       "暗証番号はエージェントの画面でのみ入力します。"),
        "done": "カードの操作が終わったら",
        "continue": "続ける",
        "cancel": "キャンセル",
        "expires": "この要求の有効期限：{when}",
        "name": "氏名", "address": "住所", "birthdate": "生年月日", "gender": "性別",
        "waiting_title": "カードの応答を待っています",
        "waiting": ("カードの操作がまだ完了していません。"
                    "エージェントの画面で操作を終えてから、もう一度お試しください。"),
        "retry": "もう一度確認する",
        "gone_title": "この要求は無効です",
        "gone": ("この認証要求は有効期限が切れたか、すでに使用されています。"
                 "元のサイトに戻って、最初からやり直してください。"),
        "wrong_browser_title": "別のブラウザーで開始された要求です",
        "wrong_browser": ("この認証は別のブラウザー（またはプライベートウィンドウ）で開始されました。"
                          "開始したブラウザーで続けるか、元のサイトからやり直してください。"),
        "refused_title": "認証できませんでした",
        "back": "{client} に戻る",
        "too_many_title": "要求が多すぎます",
        "too_many": ("このネットワークからの要求が多すぎます。{reason}秒ほど待ってから、もう一度お試しください。"),
        "error_title": "この要求を処理できません",
        "error": ("要求に問題があります（{reason}）。元のサイトに戻って、もう一度お試しください。"
                  "問題が続く場合はサイトの管理者にお問い合わせください。"),
        "test_title": "テストカード",
        "test_card": "カード", "test_outcome": "結果", "test_submit": "テストカードで認証",
        "success": "成功", "wrong_pin": "暗証番号の誤り", "blocked_pin": "暗証番号ロック",
        "revoked": "失効した証明書", "expired": "期限切れの証明書",
        "index_title": "マイナンバーカード OpenID Provider（jpki）",
        "index": "OpenID Connect の設定：",
        "sign_asks": "{client} がマイナンバーカードによる電子署名を求めています。署名する内容：",
        "sign_hash": "署名するハッシュ値（{alg}）：",
        "sign_title": "マイナンバーカードで署名",
        "sign_receives": ("{client} には、署名と署名用電子証明書（氏名・住所・生年月日・性別が記載されています）"
                          "が提供されます。"),
    },
    "en": {
        "lang": "en",
        "title": "Log in with My Number Card",
        "banner": "TEST-CARD MODE: not for real users. Anyone can log in as any test card.",
        "asks": "{client} asks you to authenticate with your My Number Card.",
        "receives": "{client} will receive:",
        "no_personal": "No personal information: only an identifier for this service.",
        "pin_auth": "You will use the user-authentication PIN (4 digits).",
        "pin_sign": "You will use the signature password (6-16 letters and digits).",
        "pin_other": "You will use a PIN of your card.",
        "use_card": "Use the card on this computer",
        "agent_note": ("Needs a card reader and the local agent (jpki agent, {agent}). "
                       "You type your PIN only in the agent's window."),
        "done": "When you have finished with your card:",
        "continue": "Continue",
        "cancel": "Cancel",
        "expires": "This request is valid until {when}.",
        "name": "Name", "address": "Address", "birthdate": "Date of birth", "gender": "Gender",
        "waiting_title": "Waiting for your card",
        "waiting": "Your card has not answered yet. Finish in the agent's window, then check again.",
        "retry": "Check again",
        "gone_title": "This request is no longer valid",
        "gone": ("This login request has expired or was already used. Go back to the site you came from "
                 "and start again."),
        "wrong_browser_title": "Started in another browser",
        "wrong_browser": ("This login was started in another browser (or a private window). Continue there, "
                          "or start again from the site."),
        "refused_title": "Authentication failed",
        "back": "Return to {client}",
        "too_many_title": "Too many requests",
        "too_many": "Too many requests came from your network. Wait about {reason} seconds, then try again.",
        "error_title": "This request cannot be processed",
        "error": ("The request is not valid ({reason}). Go back to the site and try again; if it keeps happening, "
                  "contact the site's operator."),
        "test_title": "Test cards",
        "test_card": "Card", "test_outcome": "Outcome", "test_submit": "Authenticate with the test card",
        "success": "Success", "wrong_pin": "Wrong PIN", "blocked_pin": "Blocked PIN",
        "revoked": "Revoked certificate", "expired": "Expired certificate",
        "index_title": "My Number Card OpenID Provider (jpki)",
        "index": "OpenID Connect configuration:",
        "sign_asks": "{client} asks you to sign with your My Number Card:",
        "sign_hash": "The hash to be signed ({alg}):",
        "sign_title": "Sign with My Number Card",
        "sign_receives": ("{client} will receive the signature and your signing certificate, which holds your "
                          "name, address, date of birth and gender."),
    },
}

#: Why an authorization was refused, in words a person understands, and what to do.
_REASONS: Final[dict[str, tuple[str, str]]] = {
    "revoked": ("この電子証明書は失効しています（カードの紛失届・更新・記載事項の変更など）。"
                "新しいカードをお持ちの場合はそのカードで、そうでなければお住まいの市区町村の窓口にご相談ください。",
                "The card's certificate has been revoked (the card was reported lost, renewed, or its details "
                "changed). Use your current card, or ask your municipal office."),
    "expired-certificate": ("この電子証明書は有効期限が切れています。市区町村の窓口で電子証明書を更新してください。",
                            "The card's certificate has expired. Renew it at your municipal office."),
    "certificate-not-yet-valid": ("この電子証明書はまだ有効になっていません。しばらくしてからお試しください。",
                                  "The card's certificate is not valid yet. Try again later."),
    "wrong-pin": ("暗証番号が違います。正しい暗証番号でもう一度お試しください（残り回数に注意してください）。",
                  "The PIN was wrong. Try again with the right PIN (mind the tries left)."),
    "pin-blocked": ("暗証番号がロックされています。お住まいの市区町村の窓口で暗証番号の初期化を受けてください。",
                    "The PIN is blocked. Your municipal office can reset it."),
    "cancelled": ("認証はキャンセルされました。", "You cancelled the authentication."),
    "card-unavailable": ("カードを読み取れませんでした。カードとリーダーを確認して、もう一度お試しください。",
                         "The card could not be read. Check the card and the reader, then try again."),
    "wrong-key-kind": ("カードの別の証明書が使われました。もう一度お試しください。",
                       "The card's other certificate was used. Try again."),
    "untrusted": ("このカードの証明書は信頼できる発行元のものではありません。",
                  "The card's certificate is not from a trusted issuer."),
    "revocation-unavailable": ("証明書の失効確認ができませんでした。しばらくしてからもう一度お試しください。",
                               "The certificate's revocation status could not be checked. Try again in a while."),
    "revocation-check-failed": ("証明書の失効確認に失敗しました。しばらくしてからもう一度お試しください。",
                                "The certificate's revocation check failed. Try again in a while."),
    "expired": ("時間切れになりました。元のサイトからやり直してください。",
                "The request timed out. Start again from the site."),
    "replayed": ("この要求はすでに使用されています。元のサイトからやり直してください。",
                 "This request was already used. Start again from the site."),
}
_OTHER: Final = ("カードによる認証ができませんでした（{reason}）。元のサイトからやり直してください。",
                 "The card authentication did not succeed ({reason}). Start again from the site.")

_STYLE: Final = BASE_STYLE + """
body{max-width:40rem;margin:2rem auto;padding:0 1rem}
.banner{background:#b00020;color:#fff;font-weight:bold;padding:.8rem 1rem;margin:-1rem -1rem 1.5rem;border-radius:4px}
.choices{display:flex;flex-wrap:wrap;align-items:center;gap:.6rem;margin:1rem 0}
fieldset{border:2px dashed #b00020;margin-top:2rem}
form{display:inline;margin:0}
blockquote{white-space:pre-wrap;border-left:4px solid #0a5ad4;margin:1rem 0;padding:.5rem 1rem;background:#f4f7fc}
code{word-break:break-all}
"""


def reason_text(reason: str | None, lang: str) -> str:
    """The refusal explained (see :data:`_REASONS`)."""
    texts = _REASONS.get(reason or "")
    index = 0 if lang == "ja" else 1
    if texts is not None:
        return texts[index]
    return _OTHER[index].format(reason=reason or "?")


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def page(lang: str, title_key: str, body: str, *, test_cards: bool) -> str:
    """A whole page: the title, the test-card banner when on, and ``body`` (already HTML)."""
    t = _T[lang]
    banner = f'<div class="banner" role="alert">{_e(t["banner"])}</div>' if test_cards else ""
    return (f'<!DOCTYPE html>\n<html lang="{t["lang"]}"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{_e(t[title_key])}</title><style>{_STYLE}</style></head>'
            f'<body>{banner}<h1>{_e(t[title_key])}</h1>{body}</body></html>\n')


def authorization_page(lang: str, *, client_name: str, claims: Sequence[str], pin: str | None, pending_id: str,
                       agent_link: str, agent_url: str, resume_url: str, cancel_url: str, expires: str,
                       test_cards: Iterable[str] | None, test_card_url: str | None,
                       sign: Mapping[str, Any] | None = None) -> str:
    """The page of a pending authorization (see the module docstring). ``sign``: a sign
    transaction's public data (its ``display_text`` and ``hash`` are shown)."""
    t = _T[lang]
    client = f"<strong>{_e(client_name)}</strong>"
    if sign is not None:
        try:
            digest = hash_rows(base64.b64decode(str(sign.get("hash", "")), validate=True))
        except (binascii.Error, ValueError):
            digest = "?"
        parts = [f"<p>{t['sign_asks'].format(client=client)}</p>",
                 f'<blockquote id="display-text">{_e(sign.get("display_text", ""))}</blockquote>',
                 f'<p class="note">{_e(t["sign_hash"].format(alg=sign.get("hash_algorithm", "?")))}<br>'
                 f'<code id="sign-hash">{digest}</code></p>',
                 f'<p id="sign-receives">{t["sign_receives"].format(client=client)}</p>']
    else:
        parts = [f"<p>{t['asks'].format(client=client)}</p>"]
    if claims:
        items = "".join(f"<li>{_e(t[c])}</li>" for c in claims)
        parts.append(f"<p>{t['receives'].format(client=client)}</p><ul>{items}</ul>")
    elif sign is None:
        parts.append(f"<p>{_e(t['no_personal'])}</p>")
    parts.append(f"<p>{_e(t['pin_' + pin] if pin in ('auth', 'sign') else t['pin_other'])}</p>")
    parts.append(f'<p><a class="button" id="use-card" href="{_e(agent_link)}">{_e(t["use_card"])}</a></p>')
    parts.append(f'<p class="note">{_e(t["agent_note"].format(agent=agent_url))}</p>')
    # A <div>, not a <p>: a <form> closes an open <p>, which put Cancel on a line of its own.
    parts.append(f'<div class="choices" id="choices"><span>{_e(t["done"])}</span> '
                 f'<a class="button secondary" id="continue" href="{_e(resume_url)}">{_e(t["continue"])}</a> '
                 f'<form method="post" action="{_e(cancel_url)}" id="cancel-form"><input type="hidden" '
                 f'name="pending" value="{_e(pending_id)}"><button class="button secondary" type="submit" '
                 f'id="cancel">{_e(t["cancel"])}</button></form></div>')
    parts.append(f'<p class="note">{_e(t["expires"].format(when=expires))}</p>')
    if test_cards is not None and test_card_url is not None:
        cards = "".join(f'<option value="{_e(c)}">{_e(c)}</option>' for c in test_cards)
        outcomes = "".join(f'<option value="{o}">{_e(t.get(o, t["cancel"]))}</option>' for o in OUTCOMES)
        parts.append(f'<fieldset><legend>{_e(t["test_title"])}</legend><form method="post" '
                     f'action="{_e(test_card_url)}" '
                     f'id="test-card-form"><input type="hidden" name="pending" value="{_e(pending_id)}">'
                     f'<label>{_e(t["test_card"])} <select name="card">{cards}</select></label> '
                     f'<label>{_e(t["test_outcome"])} <select name="outcome">{outcomes}</select></label> '
                     f'<button class="button" type="submit">{_e(t["test_submit"])}</button></form></fieldset>')
    return page(lang, "title" if sign is None else "sign_title", "".join(parts), test_cards=test_cards is not None)


def message_page(lang: str, kind: str, *, test_cards: bool, retry_url: str | None = None,
                 reason: str | None = None) -> str:
    """waiting, gone, wrong_browser, too_many (``reason``: the seconds to wait) or error."""
    t = _T[lang]
    text = t[kind].format(reason=_e(reason or "?")) if kind in ("error", "too_many") else _e(t[kind])
    body = f"<p>{text}</p>"
    if retry_url is not None:
        body += f'<p><a class="button" href="{_e(retry_url)}">{_e(t["retry"])}</a></p>'
    return page(lang, f"{kind}_title", body, test_cards=test_cards)


def refused_page(lang: str, *, reason: str | None, client_name: str, back_url: str, test_cards: bool) -> str:
    """A refusal: why, what to do, and the way back to the client (its error redirect)."""
    t = _T[lang]
    body = (f"<p>{_e(reason_text(reason, lang))}</p>"
            f'<p><a class="button" id="back" href="{_e(back_url)}">{_e(t["back"].format(client=client_name))}</a></p>')
    return page(lang, "refused_title", body, test_cards=test_cards)


def index_page(lang: str, *, discovery_url: str, test_cards: bool) -> str:
    t = _T[lang]
    return page(lang, "index_title", f'<p>{_e(t["index"])} <a href="{_e(discovery_url)}">{_e(discovery_url)}</a></p>',
                test_cards=test_cards)
