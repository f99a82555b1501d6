"""The labelled-traffic corpus the default model is built from.

``scenarios`` crafts traffic (frames built with struct, DNS messages with scapy) for timing
patterns real tools cannot produce in seconds: beaconing, slow exfiltration, tunnelling;
``tools`` records real programs on loopback with tcpdump (nmap, hping3, ssh, curl, dig,
openssl); ``build`` turns every capture into flows through the real agent
(``netmon agent replay``), labels them by scenario and trains the model.
"""
