"""Mail text in the charsets real mail uses, and mislabels: read as mail readers read it
(core/charsets.py), so old archives show and find "Grüße", never "Gr��e"."""

from __future__ import annotations

import pytest

from smime_companion.core.charsets import codepage_codec, decode_mail_text
from smime_companion.core.mime import decode_encoded_words, parse_entity
from smime_companion.core.text import extract_text, summary_headers


@pytest.mark.parametrize(
    ("data", "charset", "text"),
    [
        ("Grüße".encode(), "utf-8", "Grüße"),
        ("Grüße".encode("latin-1"), "iso-8859-1", "Grüße"),
        (b"\x93quoted\x94 \x80", "iso-8859-1", "\u201cquoted\u201d \u20ac"),  # Windows quotes
        ("Grüße".encode("latin-1"), None, "Grüße"),  # 8-bit text without a label
        ("Grüße".encode("latin-1"), "us-ascii", "Grüße"),
        ("Grüße".encode("latin-1"), "unknown-8bit", "Grüße"),
        ("Grüße".encode("latin-1"), "x-no-such-charset", "Grüße"),
        ("Grüße".encode("latin-1"), "utf-8", "Grüße"),  # labelled UTF-8, written in Latin-1
        ("Grüße".encode(), "us-ascii", "Grüße"),  # UTF-8 labelled us-ascii
        ("测试".encode("gbk"), "gb2312", "测试"),  # GBK characters under the gb2312 label
        ("한국".encode("cp949"), "ks_c_5601-1987", "한국"),  # Outlook's Korean label
        ("テスト".encode("iso-2022-jp"), '"ISO-2022-JP"', "テスト"),
        ("Привет".encode("koi8-r"), "KOI8-R", "Привет"),
        ("テスト".encode("cp932"), "x-sjis", "テスト"),  # labels Python does not know
        ("Grüße".encode("mac_roman"), "x-mac-roman", "Grüße"),
        ("ภาษา".encode("cp874"), "windows-874", "ภาษา"),
        ("テスト".encode("cp932"), "windows-31j", "テスト"),  # Java's name for Shift_JIS
        ("한국".encode("cp949"), "ks_c_5601-1989", "한국"),
        ("한국".encode("cp949"), "windows-949", "한국"),
        ("Łódź".encode("iso8859-2"), "iso88592", "Łódź"),
        ("שלום".encode("iso8859-8"), "logical", "שלום"),
        ("€uro".encode("iso8859-15"), "csisolatin9", "€uro"),
        ("Привет".encode("koi8-r"), "koi8", "Привет"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_text_is_read_with_its_label_or_as_readers_guess(
    data: bytes, charset: str | None, text: str
) -> None:
    assert decode_mail_text(data, charset) == text


def test_broken_multibyte_text_keeps_its_charset_with_a_replacement() -> None:
    # Never a windows-1252 reading of a whole Chinese text because one byte is bad.
    data = "你好".encode("gbk") + b"\xff" + "世界".encode("gbk")
    assert decode_mail_text(data, "gbk") == "你好\ufffd世界"


@pytest.mark.parametrize(
    ("value", "decoded"),
    [
        ("=?iso-8859-1?Q?Gr=FC=DFe?= aus Wien", "Grüße aus Wien"),
        ("=?utf-8?B?w6Q=?= =?utf-8?B?w7Y=?=", "äö"),  # whitespace between words is dropped
        ("=?utf-8?B?w6Q=?=   und =?utf-8?Q?=C3=B6?=", "ä   und ö"),
        ("=?utf-8?B?4oKs?=", "€"),
        ("=?utf-8?B?4g==?= =?utf-8?B?gqw=?=", "€"),  # one character split across two words
        ("=?x-unknown?Q?Gr=FC=DFe?= und =?utf-8?Q?caf=C3=A9?=", "Grüße und café"),
        ('"=?utf-8?B?SsO2cmc=?=" <j@example.de>', '"Jörg" <j@example.de>'),
        ("=?utf-8*de?Q?Stra=C3=9Fe?=", "Straße"),  # RFC 2231 language in the charset
        ("=?utf-8?Q?a_b?=", "a b"),
        ("=?utf-8?B?w6Q?=", "ä"),  # missing base64 padding
        ("=?utf-8?Q?caf=C3=A9 no end", "=?utf-8?Q?caf=C3=A9 no end"),  # no word: left as it is
        ("=?utf-8?B?@@@?= x", "=?utf-8?B?@@@?= x"),  # broken base64: left as it is
        ("plain, no words", "plain, no words"),
    ],
)
def test_encoded_words_are_decoded_each_with_its_charset(value: str, decoded: str) -> None:
    assert decode_encoded_words(value) == decoded


def test_raw_latin1_headers_and_bodies_of_old_mail_are_readable_and_searchable() -> None:
    old = (
        b"From: J\xf6rg M\xfcller <jm@example.de>\r\nSubject: Gr\xfc\xdfe aus K\xf6ln\r\n"
        b"Content-Type: text/plain\r\n\r\nViele Gr\xfc\xdfe\r\n"
    )
    headers = summary_headers(parse_entity(old, 65536).fields)
    assert headers["from"] == "Jörg Müller <jm@example.de>"
    assert headers["subject"] == "Grüße aus Köln"
    assert extract_text(old).body.startswith("Viele Grüße")


@pytest.mark.parametrize(
    ("subject", "charset"),
    [
        ("Привет из Москвы", "koi8-r"),
        ("Привет из Москвы", '"windows-1251"'),
        ("日本語の件名", "Shift_JIS"),
        ("日本語の件名", "EUC-JP"),
        ("中文主题", "gb2312"),
        ("한국어 제목", "euc-kr"),
        ("Ζωή", "iso-8859-7"),
    ],
)
def test_raw_headers_are_read_in_the_charset_their_section_names(
    subject: str, charset: str
) -> None:
    # Old mail from Russia, Japan, China or Korea wrote its headers raw in the charset of its
    # text, and said which one in the Content-Type; read as windows-1252 it is mojibake.
    codec = charset.strip('"')
    old = (
        f"From: {subject[:3]} <x@example.org>\r\nSubject: {subject}\r\n"
        f"Content-Type: text/plain; charset={charset}\r\n\r\n{subject}\r\n"
    ).encode("cp932" if codec == "Shift_JIS" else codec)
    headers = summary_headers(parse_entity(old, 65536).fields)
    assert headers["subject"] == subject
    assert headers["from"] == f"{subject[:3]} <x@example.org>"
    assert extract_text(old).body.startswith(subject)


def test_raw_headers_of_a_multipart_are_read_in_its_first_8bit_text_charset() -> None:
    # A KOI8-R letter with an attachment: the charset is named only by its text part, after a
    # us-ascii one that says nothing about 8-bit bytes.
    old = (
        "Subject: Отчёт за квартал\r\nFrom: Иван <ivan@example.org>\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        "Content-Type: text/plain; charset=us-ascii\r\n\r\nHi\r\n--b\r\n"
        "Content-Type: text/plain; charset=koi8-r\r\n\r\nПривет\r\n--b--\r\n"
    ).encode("koi8-r")
    headers = summary_headers(parse_entity(old, 65536).fields)
    assert (headers["subject"], headers["from"]) == ("Отчёт за квартал", "Иван <ivan@example.org>")


@pytest.mark.parametrize("charset", ["shift_jis", "koi8-r"])
def test_a_raw_file_name_is_read_in_the_charset_of_the_letter_beside_it(charset: str) -> None:
    # Old Japanese (mobile) and Russian mail wrote an attachment's name raw: its own section
    # names no charset (a PDF has none), its sibling text part does.
    letter, name = ("見積書をお送りします。", "見積書.pdf") if charset == "shift_jis" else (
        "Посылаю отчёт.", "Отчёт.pdf")  # fmt: skip
    old = (
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        f"Content-Type: text/plain; charset={charset}\r\n\r\n{letter}\r\n--b\r\n"
        f'Content-Type: application/pdf; name="{name}"\r\n\r\n%PDF\r\n--b--\r\n'
    ).encode(charset)
    assert [a.filename for a in extract_text(old).attachments] == [name]


def test_raw_iso_2022_jp_headers_are_read_by_their_escapes() -> None:
    # ISO-2022-JP is 7-bit: its escapes say what it is, with or without a label.
    for content_type in (b"text/plain; charset=iso-2022-jp", b"text/plain"):
        old = (
            b"Subject: " + "会議の件".encode("iso2022_jp") + b"\r\n"
            b"Content-Type: " + content_type + b"\r\n\r\nbody\r\n"
        )
        assert summary_headers(parse_entity(old, 65536).fields)["subject"] == "会議の件"


def test_japanese_mail_without_a_label_is_read_by_its_escapes() -> None:
    # ISO-2022-JP is 7-bit: Japanese mail went without MIME headers, or with us-ascii.
    text = "会議は明日の十時からです。\r\nよろしくお願いします。\r\n"
    for header in (b"", b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"):
        old = b"Subject: " + "会議".encode("iso2022_jp") + b"\r\n" + header + b"\r\n"
        body = extract_text(old + text.encode("iso2022_jp")).body
        assert body.replace("\r\n", "\n") == text.replace("\r\n", "\n")
    # An escape of another kind (a terminal's colour) leaves ASCII as it is.
    assert decode_mail_text(b"\x1b[1mbold\x1b[0m") == "\x1b[1mbold\x1b[0m"


# Outlook writes code page 932's NEC characters in ISO-2022-JP's double-byte runs (row 0x2D:
# ① is 2D21, Ⅲ 2D37, № 2D62, ㈱ 2D6A), which Python's ISO-2022-JP codecs refuse.
NEC_RUN = b"\x1b$B-!-7-b-j\x1b(B"


@pytest.mark.parametrize("label", ["iso-2022-jp", "ISO-2022-JP", None])
def test_iso_2022_jp_with_the_characters_outlook_adds_reads_as_windows_reads_it(
    label: str | None,
) -> None:
    data = b"Agenda " + NEC_RUN + b" \x1b$B2q5D\x1b(B \x1b(I6B\x1b(B"  # "会議", half-width "カツ"
    assert decode_mail_text(data, label) == "Agenda ①Ⅲ№㈱ 会議 ｶﾂ"
    # A subject from php-mime-mail-parser's test mail (issue 116): Russian in JIS X 0208 with
    # the NEC numero sign, as one encoded word.
    subject = "=?iso-2022-jp?B?GyRCJygnJS1iGyhCNDEgGyRCJ2AnZBsoQiAyOC4wOS4yMDE2?="
    assert decode_encoded_words(subject) == "ЖД№41 от 28.09.2016"


@pytest.mark.parametrize(
    "broken",
    [b"\x1b$B-!-\x1b(B", b"\x1b$B-!\r\n-7\x1b(B", b"\x1b$B-!\x1b$(D-7\x1b(B", b"\x1b$B-!\x0e"],
)
def test_an_iso_2022_jp_run_that_is_no_run_of_codes_is_not_read_as_one(broken: bytes) -> None:
    # A run cut in half, a line end inside it, an escape or a shift of another kind: read as
    # before (never an exception, never text made up from half a code).
    text = decode_mail_text(broken, "iso-2022-jp")
    assert "①" not in text and "Ⅲ" not in text


def test_raw_headers_that_are_utf8_or_not_the_named_charset_still_read() -> None:
    # UTF-8 (RFC 6532) wins over the label; bytes the label cannot read fall back to
    # windows-1252, as before; a multipart's section names no charset.
    for raw, content_type, subject in [
        ("Grüße".encode(), b"text/plain; charset=iso-8859-2", "Grüße"),
        ("Grüße".encode("latin-1"), b"text/plain; charset=utf-8", "Grüße"),
        (b"\x81\xff\x81", b"text/plain; charset=shift_jis", "\ufffd\xff\ufffd"),
        ("Grüße".encode("latin-1"), b"multipart/mixed; boundary=x", "Grüße"),
    ]:
        old = b"Subject: " + raw + b"\r\nContent-Type: " + content_type + b"\r\n\r\n"
        assert summary_headers(parse_entity(old, 65536).fields)["subject"] == subject


# Letters of unlabelled old mail, by language, each in the charsets it travelled in.
UNLABELLED = [
    ("Привет, Иван! Посылаю тебе отчёт за третий квартал. Прошу посмотреть цифры до пятницы.",
     ("cp1251", "koi8-r", "cp866", "iso8859-5")),
    ("Добрий день! Надсилаю вам звіт за минулий місяць. З повагою, Олена.", ("cp1251", "koi8-u")),
    ("Здравей, Иване! Изпращам ти доклада за третото тримесечие.", ("cp1251", "cp866")),
    ("Καλημέρα σας! Σας στέλνω την αναφορά για το τρίτο τρίμηνο.", ("cp1253", "iso8859-7")),
    ("שלום רב, מצורף הדוח של הרבעון השלישי. אנא בדקו את המספרים.", ("cp1255", "iso8859-8")),
    ("مرحبا، أرسل لكم تقرير الربع الثالث. يرجى مراجعة الأرقام.", ("cp1256",)),
    ("お疲れ様です。明日の会議の資料を送ります。内容を確認して、連絡してください。",
     ("shift_jis", "euc_jp")),
    ("你好，这是我们第三季度的报告。请在星期五之前检查这些数字，谢谢。", ("gb2312",)),
    ("你好，這是我們第三季度的報告。請在星期五之前檢查這些數字，謝謝。", ("big5",)),
    ("안녕하세요. 3분기 보고서를 보내드립니다. 금요일까지 확인해 주세요.", ("euc_kr",)),
    ("สวัสดีครับ ผมส่งรายงานไตรมาสที่สามมาให้ กรุณาตรวจสอบตัวเลขก่อนวันศุกร์", ("cp874", "tis-620")),
    ("Привет", ("cp1251", "koi8-r")),  # a subject of one word
    ("Sehr geehrte Frau Müller, anbei die Übersicht. Mit freundlichen Grüßen, Jörg Weiß.",
     ("cp1252",)),
    ("Bonjour Hélène, voici le rapport. Ça serait très apprécié, déjà vu où à côté.", ("cp1252",)),
    ("Hola José, ¿podrías revisar las cifras? Gracias, Ángela Núñez.", ("cp1252",)),
    ("Góðan daginn Þóra, hér er skýrslan fyrir þriðja ársfjórðung. Kveðja, Sigríður.",
     ("cp1252",)),
    ("Hej Åsa, här är rapporten. Hälsningar, Björn Öberg. Öl på ön.", ("cp1252",)),
    ("It’s a “test” – really… 20€ only.", ("cp1252",)),  # no accented letter at all
    # Central European and Turkish: windows-1252 would show "przes³anie", "veèer", "tûrõ".
    ("Dzień dobry, proszę o przesłanie raportu. Pozdrawiam, Łukasz Wiśniewski.",
     ("cp1250", "iso8859-2")),
    ("Zażółć gęślą jaźń", ("cp1250", "iso8859-2")),  # a subject of three words
    ("Dobrý den, děkuji za zprávu. Přeji hezký večer, Jiří Šťastný.", ("cp1250", "iso8859-2")),
    ("Dobrý deň, posielam vám správu. Ďakujem, Ľubomír.", ("cp1250", "iso8859-2")),
    ("Árvíztűrő tükörfúrógép. Köszönöm szépen a levelét, Gergő.", ("iso8859-2",)),
    ("Dobar dan, šaljem vam izvještaj. Hvala, Đurđa Kovačević.", ("cp1250", "iso8859-2")),
    ("Bună ziua, vă trimit raportul. Mulţumesc, Ştefan.", ("cp1250", "iso8859-2")),
    ("Merhaba Ayşe, üçüncü çeyrek raporunu gönderiyorum. Teşekkürler, Oğuz.",
     ("cp1254", "iso8859-9")),
    # Baltic: windows-1252 would show "Aèiû", "Bçrziòð", "Ðmidt".
    ("Laba diena, siunčiu jums ataskaitą. Ačiū, Žygimantas Šimkus, Vilnius.",
     ("cp1257", "iso8859-13")),
    ("Labdien, nosūtu jums pārskatu. Paldies, Jānis Bērziņš, Rīga.", ("cp1257", "iso8859-13")),
    ("Tere, saadan teile aruande. Tänan, Jüri Õunapuu, Tõnu Šmidt.", ("cp1257",)),
    # ... and western text with letters or signs those charsets would read otherwise stays.
    ("Sehr geehrte Frau Müller¹, anbei die Übersicht über 5 m³. Grüße, Jörg.", ("cp1252",)),
    ("Bon dia, us envio l'informe. Gràcies, Jordi. La col·laboració és útil, però això",
     ("cp1252",)),
    ("Med venlig hilsen, Søren Kierkegaard, København, Ærø.", ("cp1252",)),
    ("Tere, saadan teile aruande. Tänan, Jüri Õunapuu, Tõnu Šmidt.", ("cp1252",)),
    ("Mañana, niño, pingüino, corazón, también. ¡Olé! ¿Qué? ±2, ¼, £5", ("cp1252",)),
]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "charset"),
    [(text, charset) for text, charsets in UNLABELLED for charset in charsets],
    ids=lambda value: value if isinstance(value, str) and len(value) < 12 else None,
)
def test_unlabelled_8bit_text_is_read_in_the_charset_its_words_say(text: str, charset: str) -> None:
    # Before MIME, and from clients that never said: a body (and a raw header) in KOI8-R,
    # windows-1251, DOS's cp866, Greek, Hebrew, Arabic, Japanese, Chinese, Korean, Thai, Central
    # European or Turkish charsets, without a label or labelled us-ascii. Western text stays
    # windows-1252 whatever it holds.
    data = text.encode(charset)
    assert decode_mail_text(data) == text
    assert decode_mail_text(data, "us-ascii") == text
    old = b"Subject: " + data + b"\r\nMIME-Version: 1.0\r\n\r\n" + data + b"\r\n"
    assert summary_headers(parse_entity(old, 65536).fields)["subject"] == text
    assert extract_text(old).body.strip() == text


def test_an_unlabelled_subject_of_one_word_is_read_as_the_body_beneath_it_is() -> None:
    # One word says little about its charset; the letter below it says more. A us-ascii label
    # says nothing about 8-bit bytes.
    for charset in ("koi8-r", "cp1251", "cp866"):
        for label in ("", "Content-Type: text/plain; charset=us-ascii\r\n"):
            old = (
                f"Subject: Отчёт\r\nFrom: Иван <ivan@example.org>\r\n{label}\r\n"
                "Привет, Боб! Посылаю тебе отчёт за третий квартал, посмотри цифры.\r\n"
            ).encode(charset)
            headers = summary_headers(parse_entity(old, 65536).fields)
            assert (headers["subject"], headers["from"]) == ("Отчёт", "Иван <ivan@example.org>")


def test_a_western_name_above_an_unlabelled_cyrillic_letter_stays_western() -> None:
    old = "Subject: Отчёт\r\n\r\nПривет, посылаю тебе отчёт за квартал!\r\n".encode("koi8-r")
    old = b"To: J\xf6rg M\xfcller <j@example.de>\r\n" + old  # Latin-1, as his client wrote it
    headers = summary_headers(parse_entity(old, 65536).fields)
    assert (headers["to"], headers["subject"]) == ("Jörg Müller <j@example.de>", "Отчёт")
    # A declared charset is the sender's word, for Polish as for anything else.
    polish = "Subject: Zażółć gęślą jaźń\r\nContent-Type: text/plain; charset=iso-8859-2\r\n\r\n"
    headers = summary_headers(parse_entity(polish.encode("iso8859-2"), 65536).fields)
    assert headers["subject"] == "Zażółć gęślą jaźń"


def test_a_long_word_beside_an_8bit_byte_is_read_in_one_pass() -> None:
    # Fuzz finding 27a: a pattern for "a word holding a letter beyond ASCII" backtracked through
    # a long ASCII word once per letter (3.4 s for a 50 KB header field; quadratic).
    hostile = b"Subject: " + b"A" * 200_000 + b"\xff\r\n\r\n" + b"B" * 200_000 + b"\xfe"
    assert summary_headers(parse_entity(hostile, 256 * 1024).fields)["subject"].startswith("AAA")
    assert extract_text(hostile).body.startswith("BBB")


def test_a_declared_charset_is_never_second_guessed() -> None:
    # ... by a guess: only UTF-8, which text in another charset almost never is (below).
    koi8 = "Привет, как дела у тебя сегодня?".encode("koi8-r")
    assert decode_mail_text(koi8, "iso-8859-1") == koi8.decode("cp1252")


@pytest.mark.parametrize("label", ["utf-8", None, "iso-8859-1"])
def test_utf8_with_a_flaw_is_read_as_utf8_with_a_replacement_there(label: str | None) -> None:
    # A character cut short where a client split a line, a stray Latin-1 byte: the rest was
    # read as windows-1252 ("Ã¼" for every "ü"). Two in three of the bytes beyond ASCII in
    # well-formed UTF-8 sequences say UTF-8; text in an 8-bit charset almost never has them.
    flawed = "Grüße aus Köln, 是".encode() + b" \xe6 " + "Straße".encode()
    assert decode_mail_text(flawed, label) == "Grüße aus Köln, 是 \ufffd Straße"
    subject = "Grüße aus Köln, Привет".encode()[:-1]  # cut inside the last letter
    headers = summary_headers(parse_entity(b"Subject: " + subject + b"\r\n\r\n", 65536).fields)
    assert headers["subject"] == "Grüße aus Köln, Приве\ufffd"
    # Western and Cyrillic 8-bit text is no UTF-8 with a flaw.
    assert decode_mail_text("Grüße aus Köln".encode("cp1252"), label) == "Grüße aus Köln"
    russian = "Привет, как дела? Посылаю отчёт.".encode("cp1251")
    assert decode_mail_text(russian, "cp1251" if label == "iso-8859-1" else label) == (
        "Привет, как дела? Посылаю отчёт."
    )


@pytest.mark.parametrize(
    ("data", "label"),
    [
        ("Grüße".encode("utf-16-le"), "unicode"),  # Outlook's name for UTF-16
        (b"\xff\xfe" + "Grüße".encode("utf-16-le"), "unicode"),
        ("Grüße".encode("utf-16-be"), "unicodeFFFE"),
        (b"\xef\xbb\xbf" + "Grüße".encode(), "utf-8"),  # Windows' byte order mark, dropped
        (b"\xef\xbb\xbf" + "Grüße".encode(), None),
    ],
)
def test_windows_names_and_marks_of_unicode_text_are_read(data: bytes, label: str | None) -> None:
    assert decode_mail_text(data, label) == "Grüße"


@pytest.mark.parametrize(
    "label", ["iso-8859-1", "windows-1252", "iso-8859-2", "koi8-r", "shift_jis", "gb2312"]
)
def test_utf8_text_under_another_label_reads_as_utf8(label: str) -> None:
    # PHP scripts, web forms and shop systems send UTF-8 labelled iso-8859-1: read by the label,
    # "Grüße" was "GrÃ¼ÃŸe". In the body, in an encoded word and in an RFC 2231 file name.
    text = "Grüße aus Köln, Привет, 見積書"
    assert decode_mail_text(text.encode(), label) == text
    quoted = "".join(f"={b:02X}" for b in "Grüße".encode())
    assert decode_encoded_words(f"=?{label}?Q?{quoted}?=") == "Grüße"
    part = (
        "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; "
        f"charset={label}\r\n\r\n{text}\r\n--b\r\nContent-Disposition: attachment; "
        f"filename*={label}''%C3%9Cbersicht.pdf\r\n\r\n%PDF\r\n--b--\r\n"
    ).encode()
    extracted = extract_text(part)
    assert (extracted.body.strip(), extracted.attachments[0].filename) == (text, "Übersicht.pdf")
    # Text in the labelled charset is read by it, as before.
    assert decode_mail_text("Grüße aus Köln".encode("cp1252"), "iso-8859-1") == "Grüße aus Köln"


def test_a_header_of_unclosed_openings_is_read_in_linear_time() -> None:
    # Each "=?" opening must not make the scanner read to the end of the header again.
    for hostile in ("=?a?q?x" * 35_000, "=?a?q?" + "x" * 250_000, "=?" * 120_000):
        assert decode_encoded_words(hostile) == hostile


def test_html_without_a_mime_charset_is_read_with_its_meta_charset() -> None:
    page = '<html><head><meta http-equiv="Content-Type" content="text/html; charset=Shift_JIS">'
    html = (page + "</head><body>テスト</body></html>").encode("shift_jis")
    assert extract_text(b"Content-Type: text/html\r\n\r\n" + html).body == "テスト"
    # A MIME charset wins over the page's own.
    labelled = (
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        + (page + "</head><body>é</body></html>").encode()
    )
    assert extract_text(labelled).body == "é"


# A charset label is the sender's choice; Python's codec registry also holds codecs that are
# no charset: bytes-to-bytes ones (zlib, base64), which raised LookupError out of every reader
# of text; idna and "undefined", which raised UnicodeError; escape codecs, which would apply
# backslash rules to the text; punycode, whose decoding costs the square of the text's length.
NOT_CHARSETS = ["zlib", "base64", "rot13", "hex", "idna", "punycode", "unicode_escape",
                "raw_unicode_escape", "undefined", "utf\x00-8"]  # fmt: skip


@pytest.mark.parametrize("label", NOT_CHARSETS)
def test_a_label_that_is_no_charset_reads_as_unlabelled_text(label: str) -> None:
    assert decode_mail_text("Grüße \\x41".encode("latin-1"), label) == "Grüße \\x41"
    assert decode_mail_text(b"a" * 1_000_000, label) == "a" * 1_000_000  # read once
    assert decode_encoded_words(f"=?{label}?q?Gr=C3=BC=C3=9Fe?=") == "Grüße"
    message = (
        f"Subject: =?{label}?b?R3LDvMOfZQ==?=\r\n"
        f"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        f'Content-Type: text/plain; charset="{label}"\r\n\r\nGr\xfc\xdfe\r\n--b\r\n'
        f"Content-Type: application/pdf\r\n"
        f"Content-Disposition: attachment; filename*={label}''Gr%C3%BC%C3%9Fe.pdf\r\n\r\n"
        "%PDF\r\n--b--\r\n"
    ).encode("latin-1")
    assert summary_headers(parse_entity(message, 65536).fields)["subject"] == "Grüße"
    extracted = extract_text(message)
    assert extracted.body == "Grüße"
    assert [a.filename for a in extracted.attachments] == ["Grüße.pdf"]


def test_stateful_charsets_with_broken_bytes_still_read() -> None:
    assert "\ufffd" in decode_mail_text(b"+\xff\xfe-", "utf-7")
    # A surrogate UTF-7 encodes on its own: replaced, so the text can be written as UTF-8.
    assert decode_mail_text(b"a+2DQ-b", "utf-7") == "a\ufffdb"
    assert decode_mail_text(b"+2D3eAA-", "utf-7") == "\U0001f600"  # a pair stays its character
    assert "\ufffd" in decode_mail_text(b"\x1b$B\xff", "iso-2022-jp")


@pytest.mark.parametrize(
    ("codepage", "codec"),
    [(1252, "cp1252"), (1251, "cp1251"), (932, "cp932"), (65001, "utf-8"), (28592, "iso8859-2"),
     (20127, "ascii"), (0, "cp1252"), (None, "cp1252"), (99999, "cp1252")],
)  # fmt: skip
def test_windows_code_page_numbers_name_their_codec(codepage: int | None, codec: str) -> None:
    # TNEF and RTF name their text's encoding by Windows code page number.
    assert codepage_codec(codepage) == codec
