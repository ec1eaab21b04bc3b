"""What a broker does, seen through paho-mqtt (PyPI), the second client
library of perch's tests (tests/it/paho.rs runs it): delivery QoS, No Local,
Retain As Published, Retain Handling, user properties, wills with
properties, Session Expiry with queued messages, topic aliases and
subscription identifiers, over TCP or WebSocket, MQTT 5 and 3.1.1.

usage: mqtt_semantics.py HOST PORT tcp|websockets PREFIX
Prints one JSON object of observations; the Rust test asserts on them.
"""
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

HOST, PORT, TRANSPORT, PREFIX = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
WAIT = 5.0


class Client:
    """A connected client that records what it receives."""

    def __init__(self, name, v5=True, clean=True, expiry=None, will=None, alias_max=None):
        self.messages = []
        self.arrived = threading.Condition()
        protocol = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        kwargs = {} if v5 else {"clean_session": clean}
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=PREFIX + name,
                             protocol=protocol, transport=TRANSPORT, **kwargs)
        if TRANSPORT == "websockets":
            self.c.ws_set_options(path="/mqtt")
        self.c.on_message = self._on_message
        if will:
            topic, payload, qos, props = will
            self.c.will_set(topic, payload, qos, properties=props)
        connected = threading.Event()
        self.c.on_connect = lambda *a: connected.set()
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
            if alias_max is not None:
                props.TopicAliasMaximum = alias_max
            self.c.connect(HOST, PORT, clean_start=clean, properties=props)
        else:
            self.c.connect(HOST, PORT)
        self.c.loop_start()
        assert connected.wait(WAIT), "no CONNACK"

    def _on_message(self, _client, _userdata, msg):
        props = getattr(msg, "properties", None)
        with self.arrived:
            self.messages.append({
                "topic": msg.topic,
                "payload": msg.payload.decode(),
                "qos": msg.qos,
                "retain": bool(msg.retain),
                "user_properties": [list(p) for p in getattr(props, "UserProperty", [])],
                "content_type": getattr(props, "ContentType", None),
                "subscription_ids": getattr(props, "SubscriptionIdentifier", None),
                "topic_alias": getattr(props, "TopicAlias", None),
            })
            self.arrived.notify_all()

    def subscribe(self, topic, qos, sub_id=None, **options):
        props = None
        if sub_id is not None:
            props = Properties(PacketTypes.SUBSCRIBE)
            props.SubscriptionIdentifier = sub_id
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, options=SubscribeOptions(qos=qos, **options), properties=props)
        assert done.wait(WAIT), "no SUBACK"

    def subscribe_v311(self, topic, qos):
        done = threading.Event()
        self.c.on_subscribe = lambda *a: done.set()
        self.c.subscribe(topic, qos)
        assert done.wait(WAIT), "no SUBACK"

    def publish(self, topic, payload, qos, retain=False, props=None):
        self.c.publish(topic, payload, qos, retain, properties=props).wait_for_publish(WAIT)

    def wait_for(self, n, timeout=WAIT):
        """The messages once there are n, or what there is after timeout."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while len(self.messages) < n and time.monotonic() < deadline:
                self.arrived.wait(deadline - time.monotonic())
            return list(self.messages)

    def close(self, clean=True):
        if clean:
            self.c.disconnect()
        else:
            # No DISCONNECT: the connection just goes (the will is sent).
            self.c._sock.close() if self.c._sock else None
        self.c.loop_stop()


def user_props(pairs, packet=PacketTypes.PUBLISH):
    props = Properties(packet)
    props.UserProperty = pairs
    return props


def main():
    t = PREFIX + "t/"
    out = {}

    # Delivery QoS: min(published, granted), v5 and v3.1.1 subscribers.
    for label, v5 in (("v5", True), ("v311", False)):
        sub = Client("qos-sub-" + label, v5=v5)
        if v5:
            sub.subscribe(t + "qos/" + label, 2)
        else:
            sub.subscribe_v311(t + "qos/" + label, 2)
        pub = Client("qos-pub-" + label)
        for qos in (0, 1, 2):
            pub.publish(t + "qos/" + label, "q%d" % qos, qos)
        got = sub.wait_for(3)
        out["delivery_qos_" + label] = {m["payload"]: m["qos"] for m in got}
        # A QoS 1 subscription gets QoS 2 publishes at QoS 1.
        sub1 = Client("qos-sub1-" + label, v5=v5)
        if v5:
            sub1.subscribe(t + "qos1/" + label, 1)
        else:
            sub1.subscribe_v311(t + "qos1/" + label, 1)
        pub.publish(t + "qos1/" + label, "q2", 2)
        out["qos1_subscription_" + label] = [m["qos"] for m in sub1.wait_for(1)]
        for c in (sub, sub1, pub):
            c.close()

    # No Local: a client does not get its own messages back.
    c = Client("nolocal")
    c.subscribe(t + "nl", 1, noLocal=True)
    other = Client("nolocal-other")
    c.publish(t + "nl", "own", 1)
    other.publish(t + "nl", "other", 1)
    out["no_local"] = [m["payload"] for m in c.wait_for(2, timeout=2)]
    c.close()
    other.close()

    # Retain As Published; Retain Handling 0/1/2.
    pub = Client("rap-pub")
    rap = Client("rap")
    rap.subscribe(t + "rap", 1, retainAsPublished=True)
    plain = Client("rap-plain")
    plain.subscribe(t + "rap", 1)
    pub.publish(t + "rap", "kept", 1, retain=True)
    out["retain_as_published"] = [m["retain"] for m in rap.wait_for(1)]
    out["retain_not_as_published"] = [m["retain"] for m in plain.wait_for(1)]
    handling = {}
    for rh in (0, 1, 2):
        s = Client("rh%d" % rh)
        s.subscribe(t + "rap", 1, retainHandling=rh)
        s.subscribe(t + "rap", 1, retainHandling=rh)  # the same filter again
        handling[str(rh)] = [m["retain"] for m in s.wait_for(2, timeout=2)]
        s.close()
    out["retain_handling"] = handling
    pub.publish(t + "rap", "", 1, retain=True)
    for c in (pub, rap, plain):
        c.close()

    # User properties and content type pass through; so do a will's.
    sub = Client("props-sub")
    sub.subscribe(t + "props/#", 1)
    pub = Client("props-pub")
    props = user_props([("a", "1"), ("b", "2"), ("a", "3")])
    props.ContentType = "application/json"
    pub.publish(t + "props/msg", "{}", 1, props=props)
    will_props = user_props([("why", "gone")], PacketTypes.WILLMESSAGE)
    will_props.ContentType = "text/plain"
    dying = Client("props-will", will=(t + "props/will", "bye", 1, will_props))
    dying.close(clean=False)
    got = sub.wait_for(2)
    out["user_properties"] = {m["topic"][len(t):]: [m["user_properties"], m["content_type"]] for m in got}
    sub.close()
    pub.close()

    # A QoS 2 will reaches a QoS 2 subscriber at QoS 2.
    sub = Client("willqos-sub")
    sub.subscribe(t + "willqos", 2)
    dying = Client("willqos", will=(t + "willqos", "bye", 2, None))
    dying.close(clean=False)
    out["will_qos"] = [m["qos"] for m in sub.wait_for(1)]
    sub.close()

    # A delayed will goes out at once when a Clean Start reconnect ends its
    # session, and not at all when the client resumes the session.
    sub = Client("willdelay-sub")
    sub.subscribe(t + "willdelay/#", 1)
    wprops = Properties(PacketTypes.WILLMESSAGE)
    wprops.WillDelayInterval = 30
    for name, clean in (("ended", True), ("resumed", False)):
        dying = Client("willdelay-" + name, expiry=60,
                       will=(t + "willdelay/" + name, "bye", 1, wprops))
        dying.close(clean=False)
        time.sleep(0.5)
        back = Client("willdelay-" + name, clean=clean, expiry=60)
        back.close()
    out["will_on_clean_start"] = sorted(m["topic"][len(t):] for m in sub.wait_for(2, timeout=3))
    sub.close()

    # Session expiry: messages published while the client is away are
    # delivered when it comes back within the interval, not after it.
    s = Client("expiry", clean=True, expiry=2)
    s.subscribe(t + "exp", 1)
    s.close()
    pub = Client("expiry-pub")
    pub.publish(t + "exp", "while away", 1)
    back = Client("expiry", clean=False, expiry=2)
    out["session_kept"] = [m["payload"] for m in back.wait_for(1)]
    back.close()
    time.sleep(3.5)
    pub.publish(t + "exp", "after expiry", 1)
    late = Client("expiry", clean=False, expiry=2)
    out["session_expired"] = [m["payload"] for m in late.wait_for(1, timeout=2)]
    late.close()
    # A resumed session keeps its subscriptions' options and identifiers.
    s = Client("resume", clean=True, expiry=30)
    s.subscribe(t + "resume", 1, sub_id=7, noLocal=True)
    s.close()
    back = Client("resume", clean=False, expiry=30)
    back.publish(t + "resume", "own", 1)
    pub.publish(t + "resume", "other", 1)
    out["resumed_options"] = [[m["payload"], m["subscription_ids"]] for m in back.wait_for(2, timeout=2)]
    back.close()
    # Clean Start 0 without an expiry: the session ends at disconnect.
    s = Client("noexpiry", clean=False)
    s.subscribe(t + "noexp", 1)
    s.close()
    pub.publish(t + "noexp", "lost", 1)
    again = Client("noexpiry", clean=False)
    out["session_without_expiry"] = [m["payload"] for m in again.wait_for(1, timeout=2)]
    again.close()
    pub.close()

    # Topic aliases perch sets for a client that allows them (paho-mqtt 2.2
    # hands them over unresolved: the topic is empty after the first); and a
    # subscription identifier on what it receives.
    s = Client("alias", alias_max=5)
    s.subscribe(t + "alias/+", 1, sub_id=42)
    pub = Client("alias-pub")
    for i in range(3):
        pub.publish(t + "alias/x", "a%d" % i, 1)
    got = s.wait_for(3)
    out["aliased"] = [[m["topic"], m["topic_alias"], m["subscription_ids"]] for m in got]
    s.close()
    pub.close()

    print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
