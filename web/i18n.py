"""Every string a page shows, in English and Hindi.

Templates call ``t(key)``; the browser modules receive the same table as JSON.  A key missing
from a language is a test failure, not a blank on the page.
"""

from __future__ import annotations

from collections.abc import Mapping

LANGUAGES = ("en", "hi")
DEFAULT_LANGUAGE = "en"
LANG_COOKIE = "setu_lang"

STRINGS: Mapping[str, Mapping[str, str]] = {
    "app.name": {"en": "Setu", "hi": "सेतु"},
    "app.tagline": {
        "en": "Telemedicine consultations, spoke to hub",
        "hi": "टेलीमेडिसिन परामर्श, स्वास्थ्य केंद्र से अस्पताल तक",
    },
    "lang.switch": {"en": "हिन्दी", "hi": "English"},
    "nav.logout": {"en": "Sign out", "hi": "साइन आउट"},
    "nav.home": {"en": "Home", "hi": "मुख्य पृष्ठ"},
    "login.title": {"en": "Sign in", "hi": "साइन इन करें"},
    "login.username": {"en": "Username", "hi": "उपयोगकर्ता नाम"},
    "login.password": {"en": "Password", "hi": "पासवर्ड"},
    "login.submit": {"en": "Sign in", "hi": "साइन इन"},
    "login.failed": {"en": "Wrong username or password.", "hi": "उपयोगकर्ता नाम या पासवर्ड गलत है।"},
    "login.locked": {
        "en": "Too many failed attempts. Try again in a minute.",
        "hi": "बहुत से असफल प्रयास। एक मिनट बाद फिर कोशिश करें।",
    },
    "login.unavailable": {
        "en": "The service is unreachable right now. Please try again shortly.",
        "hi": "सेवा अभी उपलब्ध नहीं है। कृपया थोड़ी देर बाद कोशिश करें।",
    },
    "role.nurse": {"en": "Nurse", "hi": "नर्स"},
    "role.doctor": {"en": "Doctor", "hi": "डॉक्टर"},
    "role.auditor": {"en": "Auditor", "hi": "लेखा परीक्षक"},
    "role.admin": {"en": "Administrator", "hi": "प्रशासक"},
    "spoke.title": {"en": "Patient registration", "hi": "मरीज़ पंजीकरण"},
    "spoke.register": {"en": "Register a patient", "hi": "मरीज़ का पंजीकरण करें"},
    "patient.name": {"en": "Patient's name", "hi": "मरीज़ का नाम"},
    "patient.age": {"en": "Age (years)", "hi": "आयु (वर्ष)"},
    "patient.sex": {"en": "Sex", "hi": "लिंग"},
    "sex.female": {"en": "Female", "hi": "महिला"},
    "sex.male": {"en": "Male", "hi": "पुरुष"},
    "sex.other": {"en": "Other", "hi": "अन्य"},
    "patient.phone": {"en": "Phone (optional)", "hi": "फ़ोन (वैकल्पिक)"},
    "patient.complaint": {"en": "Chief complaint", "hi": "मुख्य शिकायत"},
    "patient.urgent": {
        "en": "Urgent: to be seen before routine patients",
        "hi": "अत्यावश्यक: सामान्य मरीज़ों से पहले देखें",
    },
    "patient.urgent_badge": {"en": "urgent", "hi": "अत्यावश्यक"},
    "spoke.get_token": {"en": "Get token", "hi": "टोकन लें"},
    "spoke.tokens": {"en": "Today's tokens", "hi": "आज के टोकन"},
    "spoke.none": {"en": "No tokens yet today.", "hi": "आज अभी तक कोई टोकन नहीं।"},
    "token.number": {"en": "Token", "hi": "टोकन"},
    "token.position": {"en": "Position {n} in queue", "hi": "कतार में स्थान {n}"},
    "token.join": {"en": "Join consultation", "hi": "परामर्श में जुड़ें"},
    "token.cancel": {"en": "Withdraw", "hi": "वापस लें"},
    "token.issued": {"en": "Token {n} issued for {name}.", "hi": "{name} के लिए टोकन {n} जारी हुआ।"},
    "state.waiting": {"en": "Waiting", "hi": "प्रतीक्षा में"},
    "state.called": {"en": "Called by the doctor", "hi": "डॉक्टर ने बुलाया"},
    "state.in_consultation": {"en": "In consultation", "hi": "परामर्श में"},
    "state.completed": {"en": "Completed", "hi": "पूर्ण"},
    "state.cancelled": {"en": "Withdrawn", "hi": "वापस लिया गया"},
    "state.scheduled": {
        "en": "Scheduled for the next service window",
        "hi": "अगली सेवा अवधि के लिए निर्धारित",
    },
    "state.carried_over": {
        "en": "Carried over: first in the next service window",
        "hi": "आगे बढ़ाया गया: अगली सेवा अवधि में सबसे पहले",
    },
    "state.expired": {
        "en": "Expired: the service window closed",
        "hi": "समाप्त: सेवा अवधि बंद हो गई",
    },
    "service.open_until": {"en": "Service open until {time}", "hi": "सेवा {time} तक खुली है"},
    "service.closed_opens": {
        "en": "Service is closed. It opens at {time}; tokens issued now wait for it.",
        "hi": "सेवा अभी बंद है। यह {time} पर खुलेगी; अभी जारी टोकन तब तक प्रतीक्षा करेंगे।",
    },
    "service.closed": {
        "en": "Service is closed; no window is planned in the coming month.",
        "hi": "सेवा बंद है; अगले महीने कोई सेवा अवधि निर्धारित नहीं है।",
    },
    "hub.call_this": {"en": "Call", "hi": "बुलाएँ"},
    "hub.skip": {"en": "Skip", "hi": "बाद में"},
    "hub.recall": {"en": "Recall", "hi": "फिर से बुलाएँ"},
    "state.no_show": {"en": "Did not join", "hi": "नहीं जुड़े"},
    "consult.ended_no_show": {
        "en": "The patient did not join in time. The token goes a few places back in the queue.",
        "hi": "मरीज़ समय पर नहीं जुड़े। टोकन कतार में कुछ स्थान पीछे चला गया है।",
    },
    "consult.ended_peer_lost": {
        "en": "The consultation ended: the other side's connection was lost.",
        "hi": "परामर्श समाप्त: दूसरी ओर का संपर्क टूट गया।",
    },
    "consult.ended_shutdown": {
        "en": "The consultation ended: the server is restarting.",
        "hi": "परामर्श समाप्त: सर्वर फिर से शुरू हो रहा है।",
    },
    "hub.held": {"en": "{n} held for the next window", "hi": "{n} अगली सेवा अवधि के लिए रुके"},
    "hub.title": {"en": "Waiting room", "hi": "प्रतीक्षा कक्ष"},
    "hub.call_next": {"en": "Call next patient", "hi": "अगले मरीज़ को बुलाएँ"},
    "hub.waiting": {"en": "{n} waiting", "hi": "{n} प्रतीक्षा में"},
    "hub.empty": {"en": "Nobody is waiting.", "hi": "कोई प्रतीक्षा में नहीं है।"},
    "hub.from": {"en": "From", "hi": "कहाँ से"},
    "hub.waited": {"en": "Waiting since", "hi": "कब से प्रतीक्षा"},
    "hub.today": {"en": "Today", "hi": "आज"},
    "hub.rejoin": {"en": "Return to consultation", "hi": "परामर्श पर लौटें"},
    "consult.title": {"en": "Consultation", "hi": "परामर्श"},
    "consult.with": {"en": "With {name}, {place}", "hi": "{name}, {place} के साथ"},
    "consult.you": {"en": "You", "hi": "आप"},
    "consult.mute": {"en": "Mute", "hi": "आवाज़ बंद"},
    "consult.unmute": {"en": "Unmute", "hi": "आवाज़ चालू"},
    "consult.camera_off": {"en": "Camera off", "hi": "कैमरा बंद"},
    "consult.camera_on": {"en": "Camera on", "hi": "कैमरा चालू"},
    "consult.hangup": {"en": "End consultation", "hi": "परामर्श समाप्त करें"},
    "consult.ended": {"en": "The consultation has ended.", "hi": "परामर्श समाप्त हो गया है।"},
    "consult.back": {"en": "Back", "hi": "वापस"},
    "conn.connecting": {"en": "Connecting…", "hi": "जुड़ रहा है…"},
    "conn.connected": {"en": "Connected", "hi": "जुड़ गया"},
    "conn.waiting_peer": {
        "en": "Waiting for the other side to join…",
        "hi": "दूसरी ओर के जुड़ने की प्रतीक्षा…",
    },
    "conn.reconnecting": {
        "en": "Connection lost, reconnecting…",
        "hi": "संपर्क टूट गया, फिर से जुड़ रहा है…",
    },
    "conn.failed": {"en": "Could not connect.", "hi": "जुड़ नहीं सका।"},
    "conn.offline": {
        "en": "Connection to the server lost; retrying…",
        "hi": "सर्वर से संपर्क टूटा; फिर से कोशिश…",
    },
    "media.denied": {
        "en": "Camera or microphone unavailable: {reason}",
        "hi": "कैमरा या माइक्रोफ़ोन उपलब्ध नहीं: {reason}",
    },
    "error.generic": {"en": "Something went wrong: {message}", "hi": "कुछ गलत हुआ: {message}"},
    "error.store_unavailable": {
        "en": "The queue service is unreachable. Please try again shortly.",
        "hi": "कतार सेवा अभी उपलब्ध नहीं है। थोड़ी देर बाद कोशिश करें।",
    },
    "error.queue_empty": {"en": "Nobody is waiting.", "hi": "कोई प्रतीक्षा में नहीं है।"},
    "error.token_not_waiting": {
        "en": "That token is no longer waiting.",
        "hi": "वह टोकन अब प्रतीक्षा में नहीं है।",
    },
    "error.room_ended": {"en": "This consultation has ended.", "hi": "यह परामर्श समाप्त हो चुका है।"},
    "error.not_a_participant": {
        "en": "You are not part of this consultation.",
        "hi": "आप इस परामर्श का हिस्सा नहीं हैं।",
    },
    "error.room_not_found": {"en": "No such consultation.", "hi": "ऐसा कोई परामर्श नहीं है।"},
    "home.title": {"en": "Overview", "hi": "सारांश"},
    "home.hubs": {"en": "Hubs and today's queues", "hi": "अस्पताल और आज की कतारें"},
    "home.waiting": {"en": "Waiting", "hi": "प्रतीक्षा में"},
    "home.served": {"en": "Served today", "hi": "आज देखे गए"},
    "home.issued": {"en": "Issued today", "hi": "आज जारी"},
    "home.spokes": {"en": "Spokes", "hi": "स्वास्थ्य केंद्र"},
    "home.unavailable": {
        "en": "Queue figures are unavailable right now.",
        "hi": "कतार के आँकड़े अभी उपलब्ध नहीं हैं।",
    },
    "page.forbidden": {
        "en": "This page is not for your role.",
        "hi": "यह पृष्ठ आपकी भूमिका के लिए नहीं है।",
    },
}


def pick_language(cookie: str | None, accept_language: str | None) -> str:
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return DEFAULT_LANGUAGE


def table(lang: str) -> dict[str, str]:
    return {key: texts[lang] for key, texts in STRINGS.items()}


def translate(lang: str, key: str, **params: object) -> str:
    text = STRINGS[key][lang]
    return text.format(**params) if params else text
