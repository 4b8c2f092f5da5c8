# Copyright: k8s-calico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""The action plugin of k8s_calico.calico.calico_nettest: runs the build for the host's architecture."""

from __future__ import annotations

from ansible_collections.k8s_calico.calico.plugins.plugin_utils.binary_module import BinaryModuleAction


class ActionModule(BinaryModuleAction):
    """k8s_calico.calico.calico_nettest (see plugins/modules/calico_nettest.yml)."""

    MODULE = 'calico_nettest'
