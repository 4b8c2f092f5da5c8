# Copyright: k8s-calico developers
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Runs the collection's binary modules: in place on the controller, copied everywhere else.

Ansible copies a binary module to the host for every task. For a task that runs on the
controller itself (a local connection without become, which is how the role runs the modules
by default), the copy is the largest part of the task's cost, so the action plugins run the
controller's own build in place instead: the arguments go to a private file, the binary runs
as the module protocol says (``module <args file>``) and its JSON result is parsed as Ansible
parses a module's. Progress lines the module writes to stderr are shown as they come.

Everywhere else (another host, become, async) the build for the host's architecture is copied
and run by Ansible's own module execution, exactly like any binary module.
"""

from __future__ import annotations

import inspect
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading

from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.utils.display import Display
from ansible.vars.clean import remove_internal_keys

try:  # ansible-core 2.19 and later: the encoder Ansible itself uses for binary modules.
    from ansible.module_utils.common.json import Direction, get_module_encoder

    _ARGS_ENCODER = get_module_encoder('legacy', Direction.CONTROLLER_TO_MODULE)
except ImportError:  # ansible-core 2.16 to 2.18
    from ansible.module_utils.common.json import AnsibleJSONEncoder as _ARGS_ENCODER

display = Display()

# The builds the collection carries, by the names `uname -m` and Python give the machine.
ARCHITECTURES = {
    'x86_64': 'x86_64',
    'amd64': 'x86_64',
    'aarch64': 'aarch64',
    'arm64': 'aarch64',
}

# bin/ at the collection's root holds <module>_<architecture> for each module and build.
BIN_DIR = os.path.realpath(os.path.join(os.path.dirname(__file__), '..', '..', 'bin'))

# A line the module writes to stderr while it waits (src/module/progress.rs).
PROGRESS_PREFIX = 'k8s-calico progress: '

# Copy the module to the host even when the task runs on the controller.
COPY_VAR = 'k8s_calico_copy_module'


def architecture(machine):
    """The build name for a machine name such as ``uname -m`` prints, or None."""
    return ARCHITECTURES.get((machine or '').strip().lower())


def binary_name(module, arch):
    """The file name of a module's build for an architecture."""
    return '%s_%s' % (module, arch)


class BinaryModuleAction(ActionBase):
    """The action plugin of a k8s_calico.calico binary module; subclasses set MODULE."""

    MODULE = ''
    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        result = super(BinaryModuleAction, self).run(tmp, task_vars)
        del tmp  # tmp no longer has any effect
        task_vars = task_vars or {}
        wrap_async = bool(self._task.async_val) and not self._connection.has_native_async
        if self._in_place(task_vars, wrap_async):
            arch = architecture(platform.machine())
            where = 'this controller (%s %s)' % (platform.system(), platform.machine())
            if platform.system() != 'Linux' or arch is None:
                return self._unsupported(result, where)
            binary = self._binary(arch)
            if binary is None:
                return self._missing(result, arch)
            if os.access(binary, os.X_OK):
                result.update(self._run_in_place(binary, task_vars))
                return result
        result.update(self._run_copied(task_vars, wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        return result

    # ---- where and which build -------------------------------------------------------------

    def _in_place(self, task_vars, wrap_async):
        """Whether the task runs on the controller as the controller's user."""
        transport = getattr(self._connection, 'transport', '')
        local = transport in ('local', 'ansible.builtin.local')
        copy = self._templar.template(task_vars.get(COPY_VAR, False))
        return local and not self._play_context.become and not wrap_async and not _truthy(copy)

    def _binary(self, arch):
        path = os.path.join(BIN_DIR, binary_name(self.MODULE, arch))
        return path if os.path.isfile(path) else None

    def _host_architecture(self, task_vars):
        """(system, machine) of the host the task runs on: from its facts, else from uname."""
        facts = task_vars.get('ansible_facts') or {}
        delegate = self._task.delegate_to
        if delegate:
            delegated = (task_vars.get('ansible_delegated_vars') or {}).get(delegate) or {}
            facts = delegated.get('ansible_facts') or {}
        if facts.get('system') and facts.get('architecture'):
            return to_text(facts['system']), to_text(facts['architecture'])
        res = self._low_level_execute_command('uname -sm', sudoable=False)
        words = to_text(res.get('stdout', '')).split()
        if res.get('rc') != 0 or len(words) != 2:
            return None, to_text(res.get('stderr', '')).strip() or 'uname -sm failed'
        return words[0], words[1]

    def _unsupported(self, result, where):
        result.update(
            failed=True,
            msg='%s has builds for Linux x86_64 and aarch64 only, and %s is neither: run the task on a Linux '
                'x86_64 or aarch64 host (delegate_to, or k8s_calico_module_host in the role)' % (self._task.action, where),
        )
        return result

    def _missing(self, result, arch):
        result.update(
            failed=True,
            msg='%s has no %s build here (%s is missing): install the collection built by `make collection`, '
                'which carries x86_64 and aarch64, or run `make build` on this architecture'
                % (self._task.action, arch, os.path.join(BIN_DIR, binary_name(self.MODULE, arch))),
        )
        return result

    # ---- the two ways to run ----------------------------------------------------------------

    def _run_copied(self, task_vars, wrap_async):
        """Copies the build for the host's architecture and runs it as Ansible runs any module."""
        system, machine = self._host_architecture(task_vars)
        arch = architecture(machine)
        if system != 'Linux' or arch is None:
            return self._unsupported({}, 'the host (%s %s)' % (system or 'unknown system', machine))
        if self._binary(arch) is None:
            return self._missing({}, arch)
        # The builds are found as modules of their own (calico_matrix_aarch64, ...), so Ansible's
        # module execution does the copy, the permissions, become and async as usual.
        self._shared_loader_obj.module_loader.add_directory(BIN_DIR)
        return self._execute_module(
            module_name='ansible.legacy.%s' % binary_name(self.MODULE, arch),
            module_args=dict(self._task.args),
            task_vars=task_vars,
            wrap_async=wrap_async,
        )

    def _run_in_place(self, binary, task_vars):
        """Runs the controller's build without copying it, as the module protocol says."""
        args = dict(self._task.args)
        self._update_module_args(self._task.action, args, task_vars)
        environment = {}
        self._compute_environment_string(environment)
        env = dict(os.environ)
        env.update((to_text(k), to_text(v)) for k, v in environment.items())
        scratch = tempfile.mkdtemp(prefix='k8s-calico-')  # 0700, the controller user's
        try:
            args['_ansible_tmpdir'] = scratch + os.sep
            args_path = os.path.join(scratch, 'args')
            fd = os.open(args_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, 'w') as f:
                json.dump(args, f, cls=_ARGS_ENCODER)
            res = self._spawn([binary, args_path], env, task_vars.get('inventory_hostname', ''))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        data = self._parse(res)
        if 'results' in data and not isinstance(data['results'], list):
            data['ansible_module_results'] = data.pop('results')
        remove_internal_keys(data)
        return data

    def _spawn(self, argv, env, host):
        """Runs the module, relaying its progress lines while it runs; returns rc, stdout, stderr."""
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env)
        try:
            out = []
            reader = threading.Thread(target=lambda: out.append(proc.stdout.read()))
            reader.start()
            err = []
            for raw in proc.stderr:
                line = to_text(raw, errors='surrogate_or_replace').rstrip('\n')
                if line.startswith(PROGRESS_PREFIX):
                    display.display('%s: %s' % (host, line[len(PROGRESS_PREFIX):]))
                else:
                    err.append(line + '\n')
            reader.join()
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # a task timeout or an interrupt: leave nothing running
                proc.kill()
                proc.wait()
        return {
            'rc': rc,
            'stdout': to_text(b''.join(out), errors='surrogate_or_replace'),
            'stderr': ''.join(err),
        }

    def _parse(self, res):
        """Parses the module's output as Ansible parses a binary module's (2.19+: a profile)."""
        if 'profile' in inspect.signature(self._parse_returned_data).parameters:
            return self._parse_returned_data(res, 'legacy')
        return self._parse_returned_data(res)


def _truthy(value):
    if isinstance(value, bool):
        return value
    return to_text(value).strip().lower() in ('1', 'true', 'yes', 'on', 'y', 't')
