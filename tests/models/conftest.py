"""Fixtures for model tests: a guard that fails any test which tries to reach the network."""

from __future__ import annotations

import socket
import urllib.request

import pytest
import torch.hub


@pytest.fixture
def no_network(monkeypatch):
    """Make every way of downloading (sockets, urllib, torch.hub, Hugging Face Hub) fail the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[:2]!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    try:
        import huggingface_hub

        monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    except ImportError:
        pass
    try:
        import torchvision.models._api as tv_api

        if hasattr(tv_api, "load_state_dict_from_url"):
            monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    except ImportError:
        pass
    return refuse
