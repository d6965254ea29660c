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
    "token.wait": {"en": "about {n} min", "hi": "लगभग {n} मिनट"},
    "token.turn_near": {
        "en": "Your turn is near: keep the patient ready",
        "hi": "बारी निकट है: मरीज़ को तैयार रखें",
    },
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
    "consult.ended_replaced": {
        "en": "This consultation was opened in another window.",
        "hi": "यह परामर्श किसी दूसरी विंडो में खोला गया है।",
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
    "consult.low_bandwidth": {
        "en": "Low-bandwidth mode (small video, clear audio)",
        "hi": "कम बैंडविड्थ मोड (छोटा वीडियो, साफ़ आवाज़)",
    },
    "conn.peer_reconnecting": {
        "en": "The other side is reconnecting…",
        "hi": "दूसरी ओर से फिर से जुड़ रहे हैं…",
    },
    "net.you": {"en": "Your network", "hi": "आपका नेटवर्क"},
    "net.good": {"en": "good", "hi": "अच्छा"},
    "net.fair": {"en": "fair", "hi": "ठीक"},
    "net.poor": {"en": "poor", "hi": "कमज़ोर"},
    "net.bad": {"en": "very poor", "hi": "बहुत कमज़ोर"},
    "net.unknown": {"en": "checking", "hi": "जाँच हो रही है"},
    "net.rtt": {"en": "round trip {ms} ms", "hi": "राउंड ट्रिप {ms} ms"},
    "net.up_loss": {"en": "{pct}% lost sending", "hi": "भेजने में {pct}% नुकसान"},
    "net.down_loss": {"en": "{pct}% lost receiving", "hi": "पाने में {pct}% नुकसान"},
    "quality.paused_self": {
        "en": "Your video is paused to keep the audio clear on this weak link.",
        "hi": "कमज़ोर नेटवर्क पर आवाज़ साफ़ रखने के लिए आपका वीडियो रोका गया है।",
    },
    "quality.paused_peer": {
        "en": "{name}'s video is paused to keep the audio clear.",
        "hi": "आवाज़ साफ़ रखने के लिए {name} का वीडियो रोका गया है।",
    },
    "quality.sending": {"en": "Sending: {label}", "hi": "भेजा जा रहा है: {label}"},
    "quality.audio_only": {"en": "audio only", "hi": "केवल आवाज़"},
    "precheck.title": {"en": "Before the consultation", "hi": "परामर्श से पहले"},
    "precheck.why": {
        "en": "Check the camera, the microphone and the connection to the hospital.",
        "hi": "कैमरा, माइक्रोफ़ोन और अस्पताल से कनेक्शन जाँचें।",
    },
    "precheck.run": {"en": "Check now", "hi": "अभी जाँचें"},
    "precheck.camera": {"en": "Camera", "hi": "कैमरा"},
    "precheck.mic": {"en": "Microphone", "hi": "माइक्रोफ़ोन"},
    "precheck.uplink": {"en": "Connection", "hi": "कनेक्शन"},
    "precheck.ok": {"en": "working", "hi": "काम कर रहा है"},
    "precheck.missing": {"en": "not found", "hi": "नहीं मिला"},
    "precheck.denied": {"en": "not available ({reason})", "hi": "उपलब्ध नहीं ({reason})"},
    "precheck.speak": {"en": "say something…", "hi": "कुछ बोलिए…"},
    "precheck.heard": {"en": "working, you were heard", "hi": "काम कर रहा है, आवाज़ सुनाई दी"},
    "precheck.silent": {
        "en": "no sound picked up; check it is not muted",
        "hi": "कोई आवाज़ नहीं आई; देखें कि यह म्यूट न हो",
    },
    "precheck.measuring": {"en": "measuring…", "hi": "माप रहे हैं…"},
    "precheck.uplink_video": {
        "en": "{kbps} kbit/s: video will start at {label}",
        "hi": "{kbps} kbit/s: वीडियो {label} पर शुरू होगा",
    },
    "precheck.uplink_audio": {
        "en": "{kbps} kbit/s: too slow for video; the call will start with audio only",
        "hi": "{kbps} kbit/s: वीडियो के लिए बहुत धीमा; कॉल केवल आवाज़ से शुरू होगी",
    },
    "precheck.unreachable": {
        "en": "could not reach the server ({reason})",
        "hi": "सर्वर तक नहीं पहुँच सके ({reason})",
    },
    # consent to recording (consult page)
    "consent.none": {
        "en": "Not recorded: the patient's consent to recording has not been recorded.",
        "hi": "रिकॉर्ड नहीं हो रहा: रिकॉर्डिंग के लिए मरीज़ की सहमति दर्ज नहीं हुई है।",
    },
    "consent.recorded": {
        "en": "Not recorded yet: consent recorded by the nurse, waiting for the doctor to confirm.",
        "hi": "अभी रिकॉर्ड नहीं हो रहा: नर्स ने सहमति दर्ज की है, डॉक्टर की पुष्टि बाकी है।",
    },
    "consent.confirmed": {
        "en": "Consent confirmed; recording starts.",
        "hi": "सहमति की पुष्टि हुई; रिकॉर्डिंग शुरू हो रही है।",
    },
    "consent.recording": {
        "en": "Recording, with the patient's consent.",
        "hi": "मरीज़ की सहमति से रिकॉर्डिंग हो रही है।",
    },
    "consent.withdrawn": {
        "en": "Not recorded: consent was withdrawn and recording has stopped.",
        "hi": "रिकॉर्ड नहीं हो रहा: सहमति वापस ली गई और रिकॉर्डिंग बंद हो गई।",
    },
    "consent.recording_disabled": {
        "en": "Not recorded: this server does not record consultations.",
        "hi": "रिकॉर्ड नहीं हो रहा: यह सर्वर परामर्श रिकॉर्ड नहीं करता।",
    },
    "consent.given_by": {"en": "Consent given by", "hi": "सहमति किसने दी"},
    "consent.patient": {"en": "The patient", "hi": "मरीज़ ने स्वयं"},
    "consent.caregiver": {
        "en": "A caregiver (minor, or patient unable to consent)",
        "hi": "देखभालकर्ता (नाबालिग, या सहमति देने में असमर्थ मरीज़)",
    },
    "consent.caregiver_name": {"en": "Caregiver's name", "hi": "देखभालकर्ता का नाम"},
    "consent.relation": {"en": "Relation to the patient", "hi": "मरीज़ से संबंध"},
    "consent.caregiver_needed": {
        "en": "Enter the caregiver's name and relation.",
        "hi": "देखभालकर्ता का नाम और संबंध लिखें।",
    },
    "consent.method": {"en": "How", "hi": "कैसे"},
    "consent.verbal": {"en": "Verbal", "hi": "मौखिक"},
    "consent.written": {"en": "Written", "hi": "लिखित"},
    "consent.record": {"en": "Record consent to recording", "hi": "रिकॉर्डिंग की सहमति दर्ज करें"},
    "consent.confirm": {"en": "Confirm consent and record", "hi": "सहमति की पुष्टि करें और रिकॉर्ड करें"},
    "consent.withdraw": {"en": "Withdraw consent", "hi": "सहमति वापस लें"},
    "consent.withdraw_confirm": {
        "en": "Stop recording? It will not start again in this consultation.",
        "hi": "रिकॉर्डिंग बंद करें? इस परामर्श में यह फिर शुरू नहीं होगी।",
    },
    "consent.by_patient": {"en": "Given by the patient", "hi": "मरीज़ द्वारा दी गई"},
    "consent.by_caregiver": {
        "en": "Given by {name} ({relation})",
        "hi": "{name} ({relation}) द्वारा दी गई",
    },
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
    "error.node_draining": {
        "en": "This server is restarting; reconnecting to continue the consultation…",
        "hi": "यह सर्वर फिर से शुरू हो रहा है; परामर्श जारी रखने के लिए फिर से जुड़ रहे हैं…",
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
    "nav.admin": {"en": "Administration", "hi": "प्रशासन"},
    "nav.audit": {"en": "Consultation records", "hi": "परामर्श रिकॉर्ड"},
    "admin.overview": {
        "en": "Service windows and today's figures, hub by hub",
        "hi": "हर अस्पताल की सेवा अवधियाँ और आज के आँकड़े",
    },
    "admin.title": {"en": "Administration", "hi": "प्रशासन"},
    "admin.hubs": {
        "en": "Hubs: service windows and today's figures",
        "hi": "अस्पताल: सेवा अवधियाँ और आज के आँकड़े",
    },
    "admin.hub": {"en": "Hub", "hi": "अस्पताल"},
    "admin.now": {"en": "Now", "hi": "अभी"},
    "admin.open_now": {"en": "Open", "hi": "खुला"},
    "admin.closed_now": {"en": "Closed", "hi": "बंद"},
    "admin.source": {"en": "Service windows", "hi": "सेवा अवधियाँ"},
    "admin.source.directory": {"en": "From the directory", "hi": "निर्देशिका से"},
    "admin.source.override": {"en": "Edited live", "hi": "यहाँ संपादित"},
    "admin.back": {"en": "← All hubs", "hi": "← सभी अस्पताल"},
    "admin.unavailable": {
        "en": "The store is unreachable right now: figures and changes are unavailable.",
        "hi": "स्टोर अभी उपलब्ध नहीं है: आँकड़े और बदलाव अभी संभव नहीं हैं।",
    },
    "admin.unknown_hub": {"en": "There is no such hub.", "hi": "ऐसा कोई अस्पताल नहीं है।"},
    "admin.form_refused": {
        "en": "The form was refused: it has expired or did not come from this site. "
        "Reload the page and try again.",
        "hi": "फ़ॉर्म अस्वीकार हुआ: उसकी अवधि समाप्त हो गई या वह इस साइट से नहीं आया। "
        "पृष्ठ फिर से लोड करके दोबारा कोशिश करें।",
    },
    "admin.saved": {
        "en": "Saved. The new service windows apply now, on every server.",
        "hi": "सहेजा गया। नई सेवा अवधियाँ अब हर सर्वर पर लागू हैं।",
    },
    "admin.was_reset": {
        "en": "Reset. The directory's service windows apply again.",
        "hi": "पहले जैसा किया गया। निर्देशिका की सेवा अवधियाँ फिर से लागू हैं।",
    },
    "admin.stale": {
        "en": "Not saved: someone else changed this hub's service meanwhile. Check the "
        "service shown below, then save again.",
        "hi": "सहेजा नहीं गया: इस बीच किसी और ने इस अस्पताल की सेवा बदल दी। नीचे दिखाई गई "
        "सेवा देखें, फिर दोबारा सहेजें।",
    },
    "admin.stored_invalid": {
        "en": "The edited service kept in the store is not valid, so the directory's service "
        "applies. Save a corrected service or reset to the directory.",
        "hi": "स्टोर में रखी संपादित सेवा मान्य नहीं है, इसलिए निर्देशिका की सेवा लागू है। "
        "सुधरी हुई सेवा सहेजें या निर्देशिका पर लौटें।",
    },
    "admin.open_until": {"en": "Open now, until {time}", "hi": "अभी खुला है, {time} तक"},
    "admin.closed_until": {
        "en": "Closed now; the next window opens at {time}",
        "hi": "अभी बंद है; अगली सेवा अवधि {time} पर खुलेगी",
    },
    "admin.figures": {"en": "Today's figures ({date})", "hi": "आज के आँकड़े ({date})"},
    "admin.issued": {"en": "Tokens issued", "hi": "जारी टोकन"},
    "admin.served": {"en": "Served (consultation completed)", "hi": "देखे गए (परामर्श पूर्ण)"},
    "admin.no_shows": {"en": "No-shows", "hi": "नहीं आए"},
    "admin.carried_over": {"en": "Carried over", "hi": "आगे बढ़ाए गए"},
    "admin.cancelled": {"en": "Withdrawn", "hi": "वापस लिए गए"},
    "admin.expired": {"en": "Expired at closing", "hi": "बंद होने पर समाप्त"},
    "admin.waiting": {
        "en": "Waiting now (queued or held)",
        "hi": "अभी प्रतीक्षा में (कतार में या रुके हुए)",
    },
    "admin.wait_avg": {"en": "Average wait to be called", "hi": "बुलाए जाने तक औसत प्रतीक्षा"},
    "admin.wait_p90": {
        "en": "Wait to be called, 90th percentile",
        "hi": "बुलाए जाने तक प्रतीक्षा, 90वाँ प्रतिशतक",
    },
    "admin.minutes": {"en": "{n} min", "hi": "{n} मिनट"},
    "admin.no_data": {"en": "no data yet", "hi": "अभी कोई आँकड़ा नहीं"},
    "admin.wait_note": {
        "en": "A wait counts only the time the hub was open: from the token's issue (or from "
        "the window's opening, for a token issued while closed) until the patient is called. "
        "Carried over: today's tokens now held for the next window.",
        "hi": "प्रतीक्षा में केवल वह समय गिना जाता है जब अस्पताल खुला था: टोकन जारी होने से (या "
        "बंद रहते जारी टोकन के लिए सेवा अवधि खुलने से) मरीज़ को बुलाए जाने तक। आगे बढ़ाए गए: "
        "आज के वे टोकन जो अब अगली सेवा अवधि के लिए रुके हैं।",
    },
    "admin.plot.title": {
        "en": "Patients waiting through the day",
        "hi": "दिन भर प्रतीक्षा करते मरीज़",
    },
    "admin.plot.x": {
        "en": "Time of day (hub's local time)",
        "hi": "दिन का समय (अस्पताल का स्थानीय समय)",
    },
    "admin.plot.y": {"en": "Patients waiting", "hi": "प्रतीक्षारत मरीज़"},
    "admin.plot.caption": {
        "en": "Green bands: a service window was open. Dashed line: now.",
        "hi": "हरी पट्टियाँ: सेवा अवधि खुली थी। टूटी रेखा: अभी।",
    },
    "admin.service": {"en": "Service windows", "hi": "सेवा अवधियाँ"},
    "admin.from_directory": {
        "en": "As the directory file sets them.",
        "hi": "जैसा निर्देशिका फ़ाइल में तय है।",
    },
    "admin.edited_by": {
        "en": "Edited live by {user} at {time} (the directory file is unchanged).",
        "hi": "{user} ने {time} पर यहाँ संपादित किया (निर्देशिका फ़ाइल नहीं बदली)।",
    },
    "admin.weekly": {"en": "Weekly windows", "hi": "साप्ताहिक सेवा अवधियाँ"},
    "admin.days": {"en": "Days", "hi": "दिन"},
    "admin.opens": {"en": "Opens", "hi": "खुलती है"},
    "admin.closes": {"en": "Closes", "hi": "बंद होती है"},
    "admin.capacity": {"en": "Tokens per window", "hi": "प्रति सेवा अवधि टोकन"},
    "admin.capacity_default": {"en": "hub default ({n})", "hi": "अस्पताल का सामान्य ({n})"},
    "admin.no_windows": {
        "en": "No weekly windows: the hub serves only on extra days.",
        "hi": "कोई साप्ताहिक सेवा अवधि नहीं: अस्पताल केवल अतिरिक्त दिनों पर सेवा देता है।",
    },
    "admin.closures": {"en": "Closures", "hi": "अवकाश"},
    "admin.extra_days": {"en": "Extra days", "hi": "अतिरिक्त दिन"},
    "admin.date": {"en": "Date", "hi": "तारीख़"},
    "admin.reason": {"en": "Reason", "hi": "कारण"},
    "admin.none_listed": {"en": "None.", "hi": "कोई नहीं।"},
    "admin.time_limit": {"en": "Time limit per consultation", "hi": "प्रति परामर्श समय सीमा"},
    "admin.at_closing": {
        "en": "Tokens still waiting at closing",
        "hi": "बंद होने पर प्रतीक्षारत टोकन",
    },
    "closing.carry_over": {
        "en": "are carried over to the head of the next window",
        "hi": "अगली सेवा अवधि में सबसे आगे रखे जाते हैं",
    },
    "closing.expire": {"en": "expire", "hi": "समाप्त हो जाते हैं"},
    "admin.urgent_advance": {
        "en": "Urgent tokens overtake routine ones issued up to",
        "hi": "अत्यावश्यक टोकन इतने समय पहले तक जारी सामान्य टोकनों से आगे जाते हैं",
    },
    "day.every": {"en": "Every day", "hi": "हर दिन"},
    "day.mon": {"en": "Mon", "hi": "सोम"},
    "day.tue": {"en": "Tue", "hi": "मंगल"},
    "day.wed": {"en": "Wed", "hi": "बुध"},
    "day.thu": {"en": "Thu", "hi": "गुरु"},
    "day.fri": {"en": "Fri", "hi": "शुक्र"},
    "day.sat": {"en": "Sat", "hi": "शनि"},
    "day.sun": {"en": "Sun", "hi": "रवि"},
    "admin.edit": {"en": "Change the service windows", "hi": "सेवा अवधियाँ बदलें"},
    "admin.edit_help": {
        "en": "Write the hub's service as in the directory file's [hubs.service] section "
        "(TOML). Times are HH:MM in the hub's time zone, and windows of one day must not "
        "overlap. A saved change applies within seconds on every server, without a restart. "
        "It is kept in the store, not in the directory file: paste it under the hub in the "
        "directory file to make it permanent.",
        "hi": "अस्पताल की सेवा उसी तरह लिखें जैसे निर्देशिका फ़ाइल के [hubs.service] भाग "
        "(TOML) में लिखी जाती है। समय अस्पताल के समय क्षेत्र में HH:MM में है, और एक दिन की "
        "सेवा अवधियाँ आपस में नहीं टकरानी चाहिए। सहेजा गया बदलाव कुछ ही सेकंड में हर सर्वर पर, "
        "बिना पुनः आरंभ किए, लागू होता है। यह स्टोर में रखा जाता है, निर्देशिका फ़ाइल में नहीं: "
        "इसे स्थायी बनाने के लिए निर्देशिका फ़ाइल में अस्पताल के नीचे चिपकाएँ।",
    },
    "admin.service_text": {"en": "Service (TOML)", "hi": "सेवा (TOML)"},
    "admin.invalid": {
        "en": "Not saved. Fix these problems and save again:",
        "hi": "सहेजा नहीं गया। ये समस्याएँ ठीक करके फिर से सहेजें:",
    },
    "admin.invalid_top": {
        "en": "Not saved: the service has problems, listed with the form below.",
        "hi": "सहेजा नहीं गया: सेवा में समस्याएँ हैं, जो नीचे फ़ॉर्म के साथ दी गई हैं।",
    },
    "admin.save": {"en": "Save and apply", "hi": "सहेजें और लागू करें"},
    "admin.reset_help": {
        "en": "Drop the live edit: the hub serves by the directory file again.",
        "hi": "यहाँ का संपादन हटाएँ: अस्पताल फिर से निर्देशिका फ़ाइल के अनुसार सेवा देगा।",
    },
    "admin.reset": {"en": "Reset to the directory", "hi": "निर्देशिका पर लौटें"},
    "admin.read_only": {
        "en": "You may view this page; only an administrator may change the service.",
        "hi": "आप यह पृष्ठ देख सकते हैं; सेवा केवल प्रशासक बदल सकते हैं।",
    },
    "page.forbidden": {
        "en": "This page is not for your role.",
        "hi": "यह पृष्ठ आपकी भूमिका के लिए नहीं है।",
    },
    # auditor pages
    "audit.title": {"en": "Consultation records", "hi": "परामर्श अभिलेख"},
    "audit.overview": {
        "en": "List, replay and verify consultations and their recordings",
        "hi": "परामर्शों और उनकी रिकॉर्डिंग की सूची देखें, उन्हें चलाएँ और जाँचें",
    },
    "audit.intro": {
        "en": "Every consultation, recorded or not. Each listing, replay, playback and download "
        "is written to the audit log with your name and address.",
        "hi": "हर परामर्श, रिकॉर्ड हुआ हो या नहीं। हर सूची, रीप्ले, प्लेबैक और डाउनलोड आपके नाम "
        "और पते के साथ ऑडिट लॉग में लिखा जाता है।",
    },
    "audit.f.from": {"en": "From (date)", "hi": "से (तारीख़)"},
    "audit.f.to": {"en": "To (date)", "hi": "तक (तारीख़)"},
    "audit.f.hub": {"en": "Hub", "hi": "अस्पताल"},
    "audit.f.spoke": {"en": "Spoke", "hi": "स्वास्थ्य केंद्र"},
    "audit.f.doctor": {"en": "Doctor", "hi": "डॉक्टर"},
    "audit.f.min_minutes": {"en": "At least (minutes)", "hi": "कम से कम (मिनट)"},
    "audit.f.max_minutes": {"en": "At most (minutes)", "hi": "अधिक से अधिक (मिनट)"},
    "audit.f.state": {"en": "Recording", "hi": "रिकॉर्डिंग"},
    "audit.any": {"en": "Any", "hi": "कोई भी"},
    "audit.filter": {"en": "Show", "hi": "दिखाएँ"},
    "audit.clear": {"en": "Clear filters", "hi": "फ़िल्टर हटाएँ"},
    "audit.found": {"en": "Consultations found: {n}", "hi": "मिले परामर्श: {n}"},
    "audit.truncated": {
        "en": "Only the newest {n} are shown: narrow the filters to see the others.",
        "hi": "केवल सबसे नए {n} दिखाए गए हैं: बाकी देखने के लिए फ़िल्टर सीमित करें।",
    },
    "audit.none_found": {
        "en": "No consultation matches these filters.",
        "hi": "इन फ़िल्टरों से कोई परामर्श मेल नहीं खाता।",
    },
    "audit.col.when": {"en": "Started (hub's time)", "hi": "शुरुआत (अस्पताल का समय)"},
    "audit.col.nurse": {"en": "Nurse", "hi": "नर्स"},
    "audit.col.patient": {"en": "Patient", "hi": "मरीज़"},
    "audit.col.duration": {"en": "Duration", "hi": "अवधि"},
    "audit.col.recording": {"en": "Recording", "hi": "रिकॉर्डिंग"},
    "audit.col.seat": {"en": "Side", "hi": "पक्ष"},
    "audit.open": {"en": "Open", "hi": "खोलें"},
    "audit.interrupted": {"en": "Interrupted", "hi": "बाधित"},
    "audit.state.recorded": {"en": "Recorded", "hi": "रिकॉर्ड हुआ"},
    "audit.state.none": {"en": "Not recorded", "hi": "रिकॉर्ड नहीं हुआ"},
    "audit.state.interrupted": {
        "en": "Interrupted (server stopped)",
        "hi": "बाधित (सर्वर रुक गया)",
    },
    "audit.state.purged": {
        "en": "Deleted by retention",
        "hi": "अवधि पूरी होने पर हटाया गया",
    },
    "audit.state.in_progress": {"en": "In progress", "hi": "जारी है"},
    "audit.bad.unknown": {"en": "Unknown filter “{name}”.", "hi": "अज्ञात फ़िल्टर “{name}”।"},
    "audit.bad.repeated": {
        "en": "The filter “{name}” is given more than once.",
        "hi": "फ़िल्टर “{name}” एक से अधिक बार दिया गया है।",
    },
    "audit.bad.too_long": {
        "en": "The value of “{name}” is too long.",
        "hi": "“{name}” का मान बहुत लंबा है।",
    },
    "audit.bad.date": {
        "en": "“{name}” must be a date written YYYY-MM-DD, not “{value}”.",
        "hi": "“{name}” YYYY-MM-DD रूप में लिखी तारीख़ होनी चाहिए, “{value}” नहीं।",
    },
    "audit.bad.date_order": {
        "en": "The end date comes before the start date.",
        "hi": "अंतिम तारीख़ शुरुआती तारीख़ से पहले है।",
    },
    "audit.bad.hub": {
        "en": "There is no hub “{value}”.",
        "hi": "“{value}” नाम का कोई अस्पताल नहीं है।",
    },
    "audit.bad.spoke": {
        "en": "There is no spoke “{value}”.",
        "hi": "“{value}” नाम का कोई स्वास्थ्य केंद्र नहीं है।",
    },
    "audit.bad.doctor": {
        "en": "There is no doctor “{value}”.",
        "hi": "“{value}” नाम का कोई डॉक्टर नहीं है।",
    },
    "audit.bad.minutes": {
        "en": "“{name}” must be a number of minutes (0 or more), not “{value}”.",
        "hi": "“{name}” मिनटों की संख्या (0 या अधिक) होनी चाहिए, “{value}” नहीं।",
    },
    "audit.bad.minutes_order": {
        "en": "The shortest duration is longer than the longest.",
        "hi": "न्यूनतम अवधि अधिकतम अवधि से लंबी है।",
    },
    "audit.bad.state": {
        "en": "There is no recording state “{value}”.",
        "hi": "“{value}” नाम की कोई रिकॉर्डिंग स्थिति नहीं है।",
    },
    "audit.unknown": {
        "en": "There is no such consultation or file.",
        "hi": "ऐसा कोई परामर्श या फ़ाइल नहीं है।",
    },
    "audit.replay": {"en": "Consultation record", "hi": "परामर्श अभिलेख"},
    "audit.back": {"en": "← All consultations", "hi": "← सभी परामर्श"},
    "audit.not_sealed": {
        "en": "This consultation is still going on, or the server stopped during it: its record "
        "is sealed when it ends.",
        "hi": "यह परामर्श अभी जारी है, या इसके दौरान सर्वर रुक गया: इसका अभिलेख समाप्ति पर मुहरबंद होता है।",
    },
    "audit.purged": {
        "en": "The recording files were deleted by the retention policy; the manifest and the "
        "audit log remain.",
        "hi": "रिकॉर्डिंग फ़ाइलें संग्रह-अवधि नीति के अनुसार हटा दी गईं; मैनिफ़ेस्ट और ऑडिट लॉग सुरक्षित हैं।",
    },
    "audit.not_recorded": {
        "en": "This consultation was not recorded:",
        "hi": "यह परामर्श रिकॉर्ड नहीं हुआ:",
    },
    "audit.why.no_consent": {
        "en": "consent was not given and confirmed.",
        "hi": "सहमति नहीं दी गई और पुष्टि नहीं हुई।",
    },
    "audit.why.withdrawn": {
        "en": "consent was withdrawn before recording started.",
        "hi": "रिकॉर्डिंग शुरू होने से पहले सहमति वापस ले ली गई।",
    },
    "audit.why.recording_off": {
        "en": "recording was switched off on the server.",
        "hi": "सर्वर पर रिकॉर्डिंग बंद थी।",
    },
    "audit.seat.spoke": {"en": "Spoke", "hi": "स्वास्थ्य केंद्र"},
    "audit.seat.hub": {"en": "Hub", "hi": "अस्पताल"},
    "audit.no_media": {"en": "Nothing recorded from this side", "hi": "इस ओर से कुछ रिकॉर्ड नहीं हुआ"},
    "audit.position": {"en": "Position in the recording", "hi": "रिकॉर्डिंग में स्थान"},
    "audit.file": {"en": "File", "hi": "फ़ाइल"},
    "audit.segment": {"en": "Segment", "hi": "खंड"},
    "audit.span": {"en": "From – to", "hi": "से – तक"},
    "audit.size": {"en": "Size", "hi": "आकार"},
    "audit.download": {"en": "Download", "hi": "डाउनलोड"},
    "audit.events": {"en": "Timeline", "hi": "घटनाक्रम"},
    "audit.events_help": {
        "en": "Click an event to play from that moment.",
        "hi": "उस क्षण से चलाने के लिए किसी घटना पर क्लिक करें।",
    },
    "audit.no_events": {"en": "No events.", "hi": "कोई घटना नहीं।"},
    "audit.event.called": {"en": "Patient called", "hi": "मरीज़ को बुलाया"},
    "audit.event.joined": {"en": "Joined", "hi": "जुड़े"},
    "audit.event.left": {"en": "Left", "hi": "चले गए"},
    "audit.event.reconnecting": {"en": "Connection lost", "hi": "संपर्क टूटा"},
    "audit.event.reconnected": {"en": "Reconnected", "hi": "फिर से जुड़े"},
    "audit.event.media_connected": {"en": "Audio and video connected", "hi": "ऑडियो-वीडियो जुड़ा"},
    "audit.event.consent_recorded": {"en": "Consent recorded", "hi": "सहमति दर्ज"},
    "audit.event.consent_confirmed": {"en": "Consent confirmed", "hi": "सहमति की पुष्टि"},
    "audit.event.consent_withdrawn": {"en": "Consent withdrawn", "hi": "सहमति वापस ली"},
    "audit.event.recording_started": {"en": "Recording started", "hi": "रिकॉर्डिंग शुरू"},
    "audit.event.recording_stopped": {"en": "Recording stopped", "hi": "रिकॉर्डिंग बंद"},
    "audit.event.hangup": {"en": "Hung up", "hi": "कॉल समाप्त की"},
    "audit.event.ended": {"en": "Consultation ended", "hi": "परामर्श समाप्त"},
    "audit.details": {"en": "Details", "hi": "विवरण"},
    "audit.registration": {"en": "Registration no.", "hi": "पंजीकरण संख्या"},
    "audit.started": {"en": "Started", "hi": "शुरू हुआ"},
    "audit.ended": {"en": "Ended", "hi": "समाप्त हुआ"},
    "audit.end_reason": {"en": "How it ended", "hi": "कैसे समाप्त हुआ"},
    "audit.reason.hangup": {"en": "Hung up", "hi": "कॉल समाप्त की गई"},
    "audit.reason.peer_lost": {"en": "Connection lost", "hi": "संपर्क टूट गया"},
    "audit.reason.no_show": {"en": "Patient did not join", "hi": "मरीज़ नहीं जुड़े"},
    "audit.reason.shutdown": {"en": "Server shut down", "hi": "सर्वर बंद हुआ"},
    "audit.reason.interrupted": {
        "en": "Server stopped during the consultation",
        "hi": "परामर्श के दौरान सर्वर रुक गया",
    },
    "audit.yes": {"en": "Yes", "hi": "हाँ"},
    "audit.no": {"en": "No", "hi": "नहीं"},
    "audit.recording_started": {"en": "Recording started", "hi": "रिकॉर्डिंग शुरू हुई"},
    "audit.recording_stopped": {"en": "Recording stopped", "hi": "रिकॉर्डिंग बंद हुई"},
    "audit.consent": {"en": "Consent", "hi": "सहमति"},
    "audit.consent.none": {"en": "None recorded", "hi": "दर्ज नहीं हुई"},
    "audit.consent.by.patient": {"en": "Given by the patient", "hi": "मरीज़ ने दी"},
    "audit.consent.by.caregiver": {"en": "Given by a caregiver", "hi": "देखभालकर्ता ने दी"},
    "audit.consent.method.verbal": {"en": "verbally", "hi": "मौखिक रूप से"},
    "audit.consent.method.written": {"en": "in writing", "hi": "लिखित रूप में"},
    "audit.consent.recorded": {
        "en": "Recorded by {who} at {time}",
        "hi": "{who} ने {time} पर दर्ज की",
    },
    "audit.consent.confirmed": {
        "en": "Confirmed by {who} at {time}",
        "hi": "{who} ने {time} पर पुष्टि की",
    },
    "audit.consent.withdrawn": {
        "en": "Withdrawn by {who} at {time}",
        "hi": "{who} ने {time} पर वापस ली",
    },
    "audit.gaps": {"en": "Gaps in the media", "hi": "मीडिया में अंतराल"},
    "audit.no_gaps": {"en": "None", "hi": "कोई नहीं"},
    "audit.node": {"en": "Written by server", "hi": "लिखने वाला सर्वर"},
    "audit.key": {"en": "Signing key", "hi": "हस्ताक्षर कुंजी"},
    "replay.play": {"en": "Play", "hi": "चलाएँ"},
    "replay.pause": {"en": "Pause", "hi": "रोकें"},
    "replay.checking": {"en": "Checking integrity…", "hi": "अखंडता की जाँच हो रही है…"},
    "replay.verified": {
        "en": "Verified: files, manifest and audit log intact",
        "hi": "सत्यापित: फ़ाइलें, मैनिफ़ेस्ट और ऑडिट लॉग अक्षुण्ण",
    },
    "replay.tampered": {
        "en": "Tampering detected: {problems}",
        "hi": "छेड़छाड़ पाई गई: {problems}",
    },
    "replay.purged": {
        "en": "Purged: the media files were deleted by the retention policy.",
        "hi": "हटाया गया: मीडिया फ़ाइलें संग्रह-अवधि नीति के अनुसार हटा दी गईं।",
    },
    "replay.verify_failed": {
        "en": "Could not verify ({reason})",
        "hi": "जाँच नहीं हो सकी ({reason})",
    },
    # nodes and metrics
    "admin.nodes": {"en": "Server nodes", "hi": "सर्वर नोड"},
    "admin.nodes.link": {
        "en": "Server nodes and their load",
        "hi": "सर्वर नोड और उन पर भार",
    },
    "admin.nodes.intro": {
        "en": "Every Setu server process whose heartbeat the store has had in the last 15 "
        "seconds, with its load at that heartbeat.",
        "hi": "हर सेतु सर्वर प्रक्रिया जिसकी धड़कन पिछले 15 सेकंड में स्टोर तक पहुँची, उस समय के भार के साथ।",
    },
    "admin.nodes.none": {
        "en": "No server node has reported recently.",
        "hi": "हाल में किसी सर्वर नोड ने सूचना नहीं दी।",
    },
    "admin.nodes.node": {"en": "Node", "hi": "नोड"},
    "admin.nodes.this": {"en": "this server", "hi": "यह सर्वर"},
    "admin.nodes.address": {"en": "Web address", "hi": "वेब पता"},
    "admin.nodes.media": {"en": "Media addresses", "hi": "मीडिया पते"},
    "admin.nodes.version": {"en": "Version", "hi": "संस्करण"},
    "admin.nodes.started": {"en": "Started", "hi": "शुरू हुआ"},
    "admin.nodes.rooms": {"en": "Live rooms", "hi": "चालू परामर्श कक्ष"},
    "admin.nodes.peers": {"en": "Media connections", "hi": "मीडिया कनेक्शन"},
    "admin.nodes.cpu": {"en": "CPU", "hi": "सीपीयू"},
    "admin.nodes.lag": {"en": "Event-loop delay", "hi": "इवेंट-लूप विलंब"},
    "admin.nodes.heartbeat": {"en": "Last heartbeat", "hi": "अंतिम धड़कन"},
    "admin.nodes.ms": {"en": "{n} ms", "hi": "{n} मि.से."},
    "admin.nodes.seconds_ago": {"en": "{n} s ago", "hi": "{n} सेकंड पहले"},
    "admin.nodes.metrics": {
        "en": "Prometheus metrics of each node: /metrics, from the node's own machine or "
        "signed in as an administrator.",
        "hi": "हर नोड के Prometheus मेट्रिक्स: /metrics, उसी मशीन से या प्रशासक के रूप में साइन इन करके।",
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


#: Strings only the server's templates use (the administration pages run no script): kept out
#: of the table every page hands its browser modules, which a slow link pays for on each page.
TEMPLATE_ONLY = ("admin.", "closing.", "day.", "audit.")


def table(lang: str) -> dict[str, str]:
    """The strings the browser modules may need, in ``lang``."""
    return {key: texts[lang] for key, texts in STRINGS.items() if not key.startswith(TEMPLATE_ONLY)}


def translate(lang: str, key: str, **params: object) -> str:
    text = STRINGS[key][lang]
    return text.format(**params) if params else text
