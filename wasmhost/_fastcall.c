/*
 * wasmhost._fastcall: the guest call and the host-function trampoline of wasmhost._capi, in C.
 *
 * Why: through ctypes, each crossing between the host and the guest converts its arguments
 * through ctypes' type machinery and builds ctypes objects; that is most of what one proxy-wasm
 * host call costs once the Python around it is compiled. This module does the same two things
 * as the pure-Python path in _capi.py (which stays the fallback and the reference):
 *
 *   GuestFunc(ctx, func, nparams, nresults, trap_ref, fail)(*args) -> int
 *       packs the i32 arguments into its own wasmtime_val_raw_t array, calls
 *       wasmtime_func_call_unchecked with the GIL released (the epoch ticker is a Python
 *       thread and must be able to interrupt a runaway guest), and returns the first i32
 *       result; on an error or a trap it calls fail(err) (which raises).
 *   host_callback_address() -> int, the address of a wasmtime_func_unchecked_callback_t
 *       whose env is a HostBinding(impl, owner, params, result_kind, allowed, denied, caller):
 *       it unpacks the raw arguments, answers `denied` when owner.restricted is set and
 *       allowed(owner) says no, calls impl(owner, *args), stores the result, and turns a
 *       Python exception into a trap after recording it on caller.on_trap_exception.
 *
 * The addresses of the two wasmtime functions used (wasmtime_func_call_unchecked,
 * wasmtime_trap_new) are handed in by init() from the library wasmtime-py loaded, so this
 * file needs no wasmtime headers and links against nothing.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define VAL_SLOT 16

typedef void *(*call_unchecked_fn)(void *ctx, const void *func, void *args, size_t nargs, void **trap);
typedef void *(*trap_new_fn)(const char *message, size_t len);

static call_unchecked_fn call_unchecked = NULL;
static trap_new_fn trap_new = NULL;
static PyObject *str_restricted = NULL;
static PyObject *str_on_trap_exception = NULL;

/* ---- GuestFunc ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    void *ctx;
    void *func;
    void **trap_ref;
    Py_ssize_t nparams;
    int nresults;
    size_t slots;
    unsigned char *buf;
    PyObject *fail;
    vectorcallfunc vectorcall;
} GuestFunc;

static PyObject *guest_call(PyObject *self_obj, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    GuestFunc *self = (GuestFunc *)self_obj;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0) {
        PyErr_SetString(PyExc_TypeError, "guest functions take positional arguments only");
        return NULL;
    }
    if (nargs != self->nparams) {
        PyErr_Format(PyExc_TypeError, "guest function takes %zd arguments, got %zd", self->nparams, nargs);
        return NULL;
    }
    if (call_unchecked == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "wasmhost._fastcall.init() was not called");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) {
        unsigned long long value = PyLong_AsUnsignedLongLongMask(args[i]);
        if (value == (unsigned long long)-1 && PyErr_Occurred()) {
            return NULL;
        }
        uint32_t word = (uint32_t)value;
        unsigned char *slot = self->buf + i * VAL_SLOT;
        memset(slot, 0, VAL_SLOT);
        memcpy(slot, &word, sizeof word);
    }
    void *err;
    Py_BEGIN_ALLOW_THREADS
    err = call_unchecked(self->ctx, self->func, self->buf, self->slots, self->trap_ref);
    Py_END_ALLOW_THREADS
    if (err != NULL || *self->trap_ref != NULL) {
        PyObject *cause = err != NULL ? PyLong_FromVoidPtr(err) : Py_NewRef(Py_None);
        if (cause == NULL) {
            return NULL;
        }
        PyObject *raised = PyObject_CallOneArg(self->fail, cause);
        Py_DECREF(cause);
        if (raised != NULL) {
            Py_DECREF(raised);
            PyErr_SetString(PyExc_RuntimeError, "the guest trapped but the failure handler returned");
        }
        return NULL;
    }
    if (self->nresults) {
        int32_t result;
        memcpy(&result, self->buf, sizeof result);
        return PyLong_FromLong(result);
    }
    return PyLong_FromLong(0);
}

static PyObject *GuestFunc_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    unsigned long long ctx, func, trap_ref;
    Py_ssize_t nparams;
    int nresults;
    PyObject *fail;
    static char *kwlist[] = {"ctx", "func", "nparams", "nresults", "trap_ref", "fail", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "KKniKO", kwlist, &ctx, &func, &nparams, &nresults, &trap_ref,
                                     &fail)) {
        return NULL;
    }
    if (nparams < 0 || nresults < 0 || !ctx || !func || !trap_ref || !PyCallable_Check(fail)) {
        PyErr_SetString(PyExc_ValueError, "GuestFunc needs a context, a function, a trap cell and a callable");
        return NULL;
    }
    GuestFunc *self = (GuestFunc *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->ctx = (void *)(uintptr_t)ctx;
    self->func = (void *)(uintptr_t)func;
    self->trap_ref = (void **)(uintptr_t)trap_ref;
    self->nparams = nparams;
    self->nresults = nresults;
    self->slots = (size_t)(nparams > nresults ? nparams : (nresults > 0 ? nresults : 1));
    self->buf = PyMem_Calloc(self->slots, VAL_SLOT);
    if (self->buf == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    Py_INCREF(fail);
    self->fail = fail;
    self->vectorcall = guest_call;
    return (PyObject *)self;
}

static int GuestFunc_traverse(GuestFunc *self, visitproc visit, void *arg) {
    Py_VISIT(self->fail);
    return 0;
}

static int GuestFunc_clear(GuestFunc *self) {
    Py_CLEAR(self->fail);
    return 0;
}

static void GuestFunc_dealloc(GuestFunc *self) {
    PyObject_GC_UnTrack(self);
    GuestFunc_clear(self);
    PyMem_Free(self->buf);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *GuestFunc_call(PyObject *self, PyObject *args, PyObject *kwargs) {
    return PyVectorcall_Call(self, args, kwargs);
}

static PyTypeObject GuestFuncType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmhost._fastcall.GuestFunc",
    .tp_basicsize = sizeof(GuestFunc),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "One guest export, called through wasmtime_func_call_unchecked.",
    .tp_new = GuestFunc_new,
    .tp_dealloc = (destructor)GuestFunc_dealloc,
    .tp_traverse = (traverseproc)GuestFunc_traverse,
    .tp_clear = (inquiry)GuestFunc_clear,
    .tp_call = GuestFunc_call,
    .tp_vectorcall_offset = offsetof(GuestFunc, vectorcall),
};

/* ---- HostBinding and the trampoline ------------------------------------------------------ */

#define MAX_PARAMS 16

typedef struct {
    PyObject_HEAD
    PyObject *impl;
    PyObject *owner;
    PyObject *allowed; /* None: allowed everywhere */
    PyObject *denied;
    PyObject *caller;
    char params[MAX_PARAMS + 1];
    Py_ssize_t nparams;
    char result; /* 0: none, 'i': u32, 'I': u64 */
} HostBinding;

static PyObject *HostBinding_new(PyTypeObject *type, PyObject *args, PyObject *kwds) {
    PyObject *impl, *owner, *allowed, *denied, *caller;
    const char *params, *results;
    static char *kwlist[] = {"impl", "owner", "params", "results", "allowed", "denied", "caller", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOssOOO", kwlist, &impl, &owner, &params, &results, &allowed,
                                     &denied, &caller)) {
        return NULL;
    }
    size_t nparams = strlen(params);
    if (nparams > MAX_PARAMS || strspn(params, "iI") != nparams || strlen(results) > 1 ||
        strspn(results, "iI") != strlen(results)) {
        PyErr_SetString(PyExc_ValueError, "signature: up to 16 of i/I for parameters, at most one result");
        return NULL;
    }
    HostBinding *self = (HostBinding *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    memcpy(self->params, params, nparams + 1);
    self->nparams = (Py_ssize_t)nparams;
    self->result = results[0];
    Py_INCREF(impl);
    self->impl = impl;
    Py_INCREF(owner);
    self->owner = owner;
    Py_INCREF(allowed);
    self->allowed = allowed;
    Py_INCREF(denied);
    self->denied = denied;
    Py_INCREF(caller);
    self->caller = caller;
    return (PyObject *)self;
}

static int HostBinding_traverse(HostBinding *self, visitproc visit, void *arg) {
    Py_VISIT(self->impl);
    Py_VISIT(self->owner);
    Py_VISIT(self->allowed);
    Py_VISIT(self->denied);
    Py_VISIT(self->caller);
    return 0;
}

static int HostBinding_clear(HostBinding *self) {
    Py_CLEAR(self->impl);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->allowed);
    Py_CLEAR(self->denied);
    Py_CLEAR(self->caller);
    return 0;
}

static void HostBinding_dealloc(HostBinding *self) {
    PyObject_GC_UnTrack(self);
    HostBinding_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject HostBindingType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmhost._fastcall.HostBinding",
    .tp_basicsize = sizeof(HostBinding),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "What one host import runs: the env of the C trampoline (keep it alive while the linker lives).",
    .tp_new = HostBinding_new,
    .tp_dealloc = (destructor)HostBinding_dealloc,
    .tp_traverse = (traverseproc)HostBinding_traverse,
    .tp_clear = (inquiry)HostBinding_clear,
};

/* Runs impl; returns its result (new reference) or NULL with an exception set. */
static PyObject *run_binding(HostBinding *binding, const unsigned char *raw) {
    if (binding->allowed != Py_None) {
        PyObject *restricted = PyObject_GetAttr(binding->owner, str_restricted);
        if (restricted == NULL) {
            return NULL;
        }
        int is_restricted = PyObject_IsTrue(restricted);
        Py_DECREF(restricted);
        if (is_restricted < 0) {
            return NULL;
        }
        if (is_restricted) {
            PyObject *verdict = PyObject_CallOneArg(binding->allowed, binding->owner);
            if (verdict == NULL) {
                return NULL;
            }
            int ok = PyObject_IsTrue(verdict);
            Py_DECREF(verdict);
            if (ok < 0) {
                return NULL;
            }
            if (!ok) {
                Py_INCREF(binding->denied);
                return binding->denied;
            }
        }
    }
    PyObject *stack[MAX_PARAMS + 1];
    stack[0] = binding->owner;
    Py_ssize_t built = 0;
    PyObject *result = NULL;
    for (; built < binding->nparams; built++) {
        const unsigned char *slot = raw + built * VAL_SLOT;
        PyObject *value;
        if (binding->params[built] == 'i') {
            uint32_t word;
            memcpy(&word, slot, sizeof word);
            value = PyLong_FromUnsignedLong(word);
        } else {
            uint64_t word;
            memcpy(&word, slot, sizeof word);
            value = PyLong_FromUnsignedLongLong(word);
        }
        if (value == NULL) {
            goto done;
        }
        stack[built + 1] = value;
    }
    result = PyObject_Vectorcall(binding->impl, stack, (size_t)(binding->nparams + 1), NULL);
done:
    for (Py_ssize_t i = 0; i < built; i++) {
        Py_DECREF(stack[i + 1]);
    }
    return result;
}

static int store_result(HostBinding *binding, PyObject *result, unsigned char *raw) {
    if (!binding->result) {
        return 0;
    }
    unsigned long long value = 0;
    if (result != Py_None) {
        int truth = PyObject_IsTrue(result);
        if (truth < 0) {
            return -1;
        }
        if (truth) {
            value = PyLong_AsUnsignedLongLongMask(result);
            if (value == (unsigned long long)-1 && PyErr_Occurred()) {
                return -1;
            }
        }
    }
    if (binding->result == 'i') {
        uint32_t word = (uint32_t)value;
        memcpy(raw, &word, sizeof word);
    } else {
        uint64_t word = (uint64_t)value;
        memcpy(raw, &word, sizeof word);
    }
    return 0;
}

/* The exception in flight becomes caller.on_trap_exception and a wasmtime trap with its text. */
static void *trap_from_exception(HostBinding *binding) {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != NULL && value != NULL) {
        PyException_SetTraceback(value, traceback);
    }
    PyObject *exc = value != NULL ? value : Py_None;
    if (PyObject_SetAttr(binding->caller, str_on_trap_exception, exc) < 0) {
        PyErr_Clear();
    }
    PyObject *text = value != NULL ? PyObject_Str(value) : NULL;
    const char *message = NULL;
    Py_ssize_t length = 0;
    if (text != NULL) {
        message = PyUnicode_AsUTF8AndSize(text, &length);
    }
    if (message == NULL || length == 0) {
        PyErr_Clear();
        message = type != NULL ? ((PyTypeObject *)type)->tp_name : "host function failed";
        length = (Py_ssize_t)strlen(message);
    }
    void *trap = trap_new(message, (size_t)length);
    Py_XDECREF(text);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
    return trap;
}

static void *host_trampoline(void *env, void *wasm_caller, unsigned char *raw, size_t nraw) {
    (void)wasm_caller;
    (void)nraw;
    PyGILState_STATE gil = PyGILState_Ensure();
    HostBinding *binding = (HostBinding *)env;
    void *trap = NULL;
    PyObject *result = run_binding(binding, raw);
    if (result == NULL || store_result(binding, result, raw) < 0) {
        trap = trap_from_exception(binding);
    }
    Py_XDECREF(result);
    PyGILState_Release(gil);
    return trap;
}

/* ---- module ------------------------------------------------------------------------------ */

static PyObject *fastcall_init(PyObject *module, PyObject *args) {
    (void)module;
    unsigned long long call_address, trap_address;
    if (!PyArg_ParseTuple(args, "KK", &call_address, &trap_address)) {
        return NULL;
    }
    if (!call_address || !trap_address) {
        PyErr_SetString(PyExc_ValueError, "init() needs the addresses of two wasmtime functions");
        return NULL;
    }
    call_unchecked = (call_unchecked_fn)(uintptr_t)call_address;
    trap_new = (trap_new_fn)(uintptr_t)trap_address;
    Py_RETURN_NONE;
}

static PyObject *fastcall_host_callback_address(PyObject *module, PyObject *unused) {
    (void)module;
    (void)unused;
    return PyLong_FromVoidPtr((void *)host_trampoline);
}

static PyMethodDef fastcall_methods[] = {
    {"init", fastcall_init, METH_VARARGS,
     "init(call_unchecked_address, trap_new_address): where wasmtime's two functions are."},
    {"host_callback_address", fastcall_host_callback_address, METH_NOARGS,
     "The address of the C trampoline to register with wasmtime_linker_define_func_unchecked."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef fastcall_module = {
    PyModuleDef_HEAD_INIT, "wasmhost._fastcall",
    "The guest call and host-function trampoline of wasmhost._capi, in C.", -1, fastcall_methods,
};

PyMODINIT_FUNC PyInit__fastcall(void) {
    if (PyType_Ready(&GuestFuncType) < 0 || PyType_Ready(&HostBindingType) < 0) {
        return NULL;
    }
    str_restricted = PyUnicode_InternFromString("restricted");
    str_on_trap_exception = PyUnicode_InternFromString("on_trap_exception");
    if (str_restricted == NULL || str_on_trap_exception == NULL) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&fastcall_module);
    if (module == NULL) {
        return NULL;
    }
    Py_INCREF(&GuestFuncType);
    Py_INCREF(&HostBindingType);
    if (PyModule_AddObject(module, "GuestFunc", (PyObject *)&GuestFuncType) < 0 ||
        PyModule_AddObject(module, "HostBinding", (PyObject *)&HostBindingType) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
