build-fp/chain/qcow2_writer.o: chain/qcow2_writer.c chain/qcow2_writer.h \
 chain/layer_io.h common/log.h chain/qcow2_format.h
chain/qcow2_writer.h:
chain/layer_io.h:
common/log.h:
chain/qcow2_format.h:
