// SPDX-License-Identifier: MIT
/* zctrace.workload._engine: the compiled send engine (engine.c) for Python; the loop runs
 * with the GIL released. */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <errno.h>
#include <sched.h>
#include <string.h>

#include "engine.h"

PyDoc_STRVAR(run_doc,
"run(fd, mode, size, *, tcp=False, duration=0.0, count=-1, notify_batch=32, batch=32,\n"
"    inflight=8, lazy=False, report_usage=True, final_wait=10.0)\n"
"-> (requests, bytes, seconds, cpu_seconds, zerocopied, copied)\n\n"
"Run one workload on the connected socket fd; exactly one of duration (s) and count.\n"
"Raises ValueError on bad arguments, OSError when a call fails.");

static PyObject *engine_run(PyObject *self, PyObject *args, PyObject *kw)
{
	static char *names[] = {"fd", "mode", "size", "tcp", "duration", "count", "notify_batch", "batch",
				"inflight", "lazy", "report_usage", "final_wait", NULL};
	struct zc_config cfg = {.notify_batch = 32, .batch = 32, .inflight = 8, .report_usage = 1,
				.count = -1, .final_wait = 10.0};
	struct zc_result res;
	const char *mode;
	int fd, mode_id, ret;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "isi|$pdliiippd", names, &fd, &mode, &cfg.size, &cfg.tcp,
					 &cfg.duration, &cfg.count, &cfg.notify_batch, &cfg.batch,
					 &cfg.inflight, &cfg.lazy, &cfg.report_usage, &cfg.final_wait))
		return NULL;
	mode_id = zc_mode_of(mode);
	if (mode_id < 0) {
		PyErr_Format(PyExc_ValueError, "unknown mode %R", PyTuple_GET_ITEM(args, 1));
		return NULL;
	}
	cfg.mode = mode_id;
	Py_BEGIN_ALLOW_THREADS
	ret = zc_run(fd, &cfg, &res);
	Py_END_ALLOW_THREADS
	if (ret && !strcmp(res.failed, "arguments")) {
		PyErr_SetString(PyExc_ValueError, "bad engine arguments");
		return NULL;
	}
	if (ret) { /* OSError(errno, "call: strerror") */
		PyObject *msg = PyUnicode_FromFormat("%s: %s", res.failed, strerror(res.err)), *exc;

		exc = msg ? Py_BuildValue("(iN)", res.err, msg) : NULL;
		if (exc) {
			PyErr_SetObject(PyExc_OSError, exc);
			Py_DECREF(exc);
		}
		return NULL;
	}
	return Py_BuildValue("(llddll)", res.requests, res.bytes, res.seconds, res.cpu_seconds,
			     res.zerocopied, res.copied);
}

PyDoc_STRVAR(private_files_doc,
"private_files()\n\n"
"Give the calling thread a file descriptor table of its own (unshare(CLONE_FILES)). The kernel\n"
"takes a reference on the file at every socket call of a thread whose table is shared (a\n"
"multi-threaded process), which a single-threaded sender never pays: call it first in the thread\n"
"that runs the loops, never in the main thread. Raises OSError.");

static PyObject *engine_private_files(PyObject *self, PyObject *unused)
{
	if (unshare(CLONE_FILES))
		return PyErr_SetFromErrno(PyExc_OSError);
	Py_RETURN_NONE;
}

PyDoc_STRVAR(stop_doc, "stop()\n\nAsk a run() in progress in another thread to end at its next clock check.");

static PyObject *engine_stop(PyObject *self, PyObject *unused)
{
	zc_request_stop();
	Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
	{"run", (PyCFunction)(void (*)(void))engine_run, METH_VARARGS | METH_KEYWORDS, run_doc},
	{"stop", engine_stop, METH_NOARGS, stop_doc},
	{"private_files", engine_private_files, METH_NOARGS, private_files_doc},
	{NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_engine", "zctrace's compiled send engine.",
				    -1, methods};

PyMODINIT_FUNC PyInit__engine(void)
{
	return PyModule_Create(&module);
}
