"""The page language shared by the provider's and the agent's pages (``jpki.i18n``)."""

from __future__ import annotations

import pytest

from jpki import i18n
from jpki.agent import pages as agent_pages
from jpki.idp import pages as idp_pages


@pytest.mark.parametrize(("accept", "ui_locales", "chosen"), [
    (None, (), "ja"),
    ("", (), "ja"),
    ("en", (), "en"),
    ("en-GB,ja;q=0.5", (), "en"),
    ("ja,en;q=0.8", (), "ja"),
    ("fr,en;q=0.3", (), "en"),
    ("fr", (), "ja"),
    ("en;q=0", (), "ja"),                 # q=0: "not English"
    ("en;q=0.5,ja;q=0.5", (), "en"),      # a tie: the first named
    ("en;q=abc", (), "ja"),               # an unreadable weight counts as 0
    ("en;q=inf,ja;q=0.1", (), "ja"),
    ("en;q=nan", (), "ja"),
    ("EN-us", (), "en"),
    ("en", ("ja",), "ja"),                # the client's ui_locales come first
    ("ja", ("fr", "en-US"), "en"),
    ("en", ("fr",), "en"),
])
def test_choose_language(accept, ui_locales, chosen):
    assert i18n.choose_language(accept, ui_locales) == chosen


def test_both_pages_choose_with_the_one_function_and_share_the_style():
    assert agent_pages.choose_language is i18n.choose_language
    assert idp_pages.choose_language is i18n.choose_language
    assert agent_pages._STYLE.startswith(i18n.BASE_STYLE) and idp_pages._STYLE.startswith(i18n.BASE_STYLE)
