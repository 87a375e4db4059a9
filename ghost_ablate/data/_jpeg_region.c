/* Decode one rectangle of a JPEG, at 1/1, 1/2, 1/4 or 1/8 scale, with libjpeg-turbo's own
 * region calls: rows above the rectangle are entropy-decoded and skipped (no IDCT, no colour
 * conversion), columns outside it are cropped at the iMCU grid (jpeg_crop_scanline) and rows
 * below it are never read. Built as an optional extension (pyproject.toml); the Python side
 * (decode.py) falls back to a whole-image decode where it is missing or refuses an image. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <setjmp.h>
#include <stdio.h>
#include <jpeglib.h>
#include <jerror.h>

#define ROWS_PER_CALL 16

struct region_error {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
    char message[JMSG_LENGTH_MAX];
};

static void raise_out(j_common_ptr cinfo)
{
    struct region_error *err = (struct region_error *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, err->message);
    longjmp(err->jump, 1);
}

static void warn(j_common_ptr cinfo, int level)
{
    /* a file cut short is unreadable, as PIL and torchvision have it (libjpeg would fill the
     * missing rows with grey); other warnings, such as junk bytes before a marker, decode on */
    if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
        raise_out(cinfo);
}

/* A decompressor whose errors (and a file cut short) jump to the caller's setjmp. */
static void prepare(struct jpeg_decompress_struct *cinfo, struct region_error *err)
{
    cinfo->err = jpeg_std_error(&err->pub);
    err->pub.error_exit = raise_out;
    err->pub.emit_message = warn;
    jpeg_create_decompress(cinfo);
}

/* decode_region(data, left, top, width, height, denom) -> (bytearray, width, height, x, y)
 * The rectangle is in the full image's pixels; the result holds rows y .. y+height and columns
 * x .. x+width of the image decoded at 1/denom (libjpeg's output size: ceil(side / denom)),
 * with a margin: x is aligned down to the iMCU grid, so the result may start left of the
 * rectangle and be wider. Its pixels are those of a whole-image decode at that scale.
 * ValueError for what libjpeg refuses, including CMYK images, which the caller hands to a
 * decoder that converts them. */
static PyObject *decode_region(PyObject *self, PyObject *args)
{
    Py_buffer src;
    int left, top, width, height, denom;
    struct jpeg_decompress_struct cinfo;
    struct region_error err;
    PyObject *volatile out = NULL;
    JSAMPROW rows[ROWS_PER_CALL];

    (void)self;
    if (!PyArg_ParseTuple(args, "y*iiiii", &src, &left, &top, &width, &height, &denom))
        return NULL;
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8) {
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, "denom must be 1, 2, 4 or 8");
        return NULL;
    }
    prepare(&cinfo, &err);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&src);
        Py_XDECREF(out);
        PyErr_SetString(PyExc_ValueError, err.message);
        return NULL;
    }
    jpeg_mem_src(&cinfo, (const unsigned char *)src.buf, (unsigned long)src.len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        strcpy(err.message, "CMYK JPEG");
        longjmp(err.jump, 1);
    }
    cinfo.out_color_space = JCS_RGB;
    cinfo.scale_num = 1;
    cinfo.scale_denom = (unsigned int)denom;
    jpeg_start_decompress(&cinfo);

    /* one pixel of margin on each side: libjpeg's fancy upsampling of a cropped scanline lacks
     * the neighbour outside it, so the region's own edge pixels would differ from a whole decode */
    long x0 = left / denom - 1, y0 = top / denom - 1;
    long x1 = (left + (long)width + denom - 1) / denom + 1, y1 = (top + (long)height + denom - 1) / denom + 1;
    if (x0 < 0) x0 = 0;
    if (y0 < 0) y0 = 0;
    if (x1 > (long)cinfo.output_width) x1 = cinfo.output_width;
    if (y1 > (long)cinfo.output_height) y1 = cinfo.output_height;
    if (x1 <= x0 || y1 <= y0 || left < 0 || top < 0) {
        strcpy(err.message, "the rectangle lies outside the image");
        longjmp(err.jump, 1);
    }
    JDIMENSION xoff = (JDIMENSION)x0, cw = (JDIMENSION)(x1 - x0);
    jpeg_crop_scanline(&cinfo, &xoff, &cw);
    if (y0 > 0)
        jpeg_skip_scanlines(&cinfo, (JDIMENSION)y0);
    size_t stride = (size_t)cw * 3;
    out = PyByteArray_FromStringAndSize(NULL, (Py_ssize_t)(stride * (size_t)(y1 - y0)));
    if (out == NULL) {
        strcpy(err.message, "out of memory");
        longjmp(err.jump, 1);
    }
    unsigned char *base = (unsigned char *)PyByteArray_AS_STRING(out);
    while ((long)cinfo.output_scanline < y1) {
        long at = (long)cinfo.output_scanline, n = y1 - at;
        if (n > ROWS_PER_CALL) n = ROWS_PER_CALL;
        for (long i = 0; i < n; i++)
            rows[i] = base + (size_t)(at - y0 + i) * stride;
        if (jpeg_read_scanlines(&cinfo, rows, (JDIMENSION)n) == 0) {
            strcpy(err.message, "the image ends before the rectangle");
            longjmp(err.jump, 1);
        }
    }
    jpeg_abort_decompress(&cinfo);  /* the rows below the rectangle are never decoded */
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&src);
    return Py_BuildValue("(NIlIl)", out, cw, y1 - y0, xoff, y0);
}

/* image_size(data) -> (width, height) from the JPEG's header alone; ValueError where libjpeg
 * cannot read one. */
static PyObject *image_size(PyObject *self, PyObject *args)
{
    Py_buffer src;
    struct jpeg_decompress_struct cinfo;
    struct region_error err;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*", &src))
        return NULL;
    prepare(&cinfo, &err);
    if (setjmp(err.jump)) {
        jpeg_destroy_decompress(&cinfo);
        PyBuffer_Release(&src);
        PyErr_SetString(PyExc_ValueError, err.message);
        return NULL;
    }
    jpeg_mem_src(&cinfo, (const unsigned char *)src.buf, (unsigned long)src.len);
    jpeg_read_header(&cinfo, TRUE);
    unsigned int width = cinfo.image_width, height = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    PyBuffer_Release(&src);
    return Py_BuildValue("(II)", width, height);
}

static PyMethodDef methods[] = {
    {"image_size", image_size, METH_VARARGS, "image_size(data) -> (width, height), from a JPEG's header"},
    {"decode_region", decode_region, METH_VARARGS,
     "decode_region(data, left, top, width, height, denom) -> (bytearray, width, height, x, y): "
     "RGB rows of one rectangle of a JPEG decoded at 1/denom"},
    {NULL, NULL, 0, NULL}
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_jpeg_region",
    "One rectangle of a JPEG, decoded by libjpeg-turbo's region calls.", -1, methods, NULL, NULL, NULL, NULL
};

PyMODINIT_FUNC PyInit__jpeg_region(void)
{
    return PyModule_Create(&module);
}
